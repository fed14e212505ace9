"""Are templates made at two operating points interchangeable? Every image of a
labeled set embedded at each runtime and precision (through the evaluation's
template cache), then, against the first point:

- the cosine between one image's two templates (worst, 0.1th percentile, median);
- every comparison of the set made mixed (one template from each point) against
  the same comparison made at the first point: the largest and 99.9th
  percentile score change;
- mixed comparisons decided at the other point's calibrated thresholds: the
  false-match rate against its target and the false non-match rate, beside
  the same for unmixed comparisons at that point.

    .venv/bin/python -m benchmarks.operating_points ../shared/data/lfw-dev \\
        [--points onnxruntime-f32 openvino-f32 openvino-bf16]

A stored template made at one point and a probe made at another meet whenever a
server changes its precision (a new processor, a new setting) without
re-enrolling: this measures whether that is safe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.reporting import provenance, run_dir, write_json
from verifier.calibration import load_table
from verifier.config import get_settings
from verifier.evaluation.cache import embed_set
from verifier.evaluation.datasets import load_set
from verifier.modelzoo.runtime import BF16, F32, ONNXRUNTIME, OPENVINO, OperatingPoint, openvino_has_bf16
from verifier.pipeline import FaceEngine, Selection


def _engine(point: OperatingPoint) -> FaceEngine:
    settings = get_settings().model_copy(deep=True)
    settings.models.runtime = point.runtime  # type: ignore[assignment]
    settings.models.precision = point.precision  # type: ignore[assignment]
    return FaceEngine.from_settings(settings)


def _table_path(point: OperatingPoint) -> Path:
    settings = get_settings()
    name = settings.models.pack if point == OperatingPoint(ONNXRUNTIME, F32) else f"{settings.models.pack}.{point.key}"
    return settings.matching.calibration_dir / f"{name}.json"


def compare(reference: np.ndarray, other: np.ndarray, subjects: np.ndarray, acquired: np.ndarray,
            table_path: Path) -> dict[str, object]:
    """``other``'s templates against ``reference``'s, as the docstring lists."""
    ref, oth, who = reference[acquired], other[acquired], subjects[acquired]
    same_image = np.sum(ref * oth, axis=1)
    upper = np.triu_indices(len(ref), k=1)
    pure_ref = (ref @ ref.T)[upper]
    pure_other = (oth @ oth.T)[upper]
    cross = oth @ ref.T
    mixed = ((cross + cross.T) / 2)[upper]  # the probe from either side, averaged per pair
    worst_mixed = np.maximum(np.abs((cross - (ref @ ref.T)))[upper], np.abs((cross.T - (ref @ ref.T)))[upper])
    mated = (who[:, None] == who[None, :])[upper]
    rows = []
    for row in load_table(table_path).rows:
        rows.append({
            "target_fmr": row.target_fmr, "threshold": row.threshold,
            "fmr_unmixed": float(np.mean(pure_other[~mated] >= row.threshold)),
            "fmr_mixed": float(np.mean(mixed[~mated] >= row.threshold)),
            "fnmr_unmixed": float(np.mean(pure_other[mated] < row.threshold)),
            "fnmr_mixed": float(np.mean(mixed[mated] < row.threshold)),
        })
    return {
        "images": int(acquired.sum()),
        "same_image_cosine": {"min": float(same_image.min()), "p0.1": float(np.percentile(same_image, 0.1)),
                              "median": float(np.median(same_image))},
        "mixed_score_change": {"max": float(worst_mixed.max()), "p99.9": float(np.percentile(worst_mixed, 99.9)),
                               "mated_max": float(worst_mixed[mated].max())},
        "unmixed_score_change": {"max": float(np.abs(pure_other - pure_ref).max())},
        "comparisons": {"mated": int(mated.sum()), "non_mated": int((~mated).sum())},
        "decisions": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    points = [f"{ONNXRUNTIME}-{F32}", f"{OPENVINO}-{F32}"] + ([f"{OPENVINO}-{BF16}"] if openvino_has_bf16() else [])
    parser.add_argument("--points", nargs="+", default=points)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    labeled = load_set(args.dataset)
    chosen = [OperatingPoint(*key.split("-")) for key in args.points]
    templates = {}
    for point in chosen:
        engine = _engine(point)
        templates[point] = embed_set(engine, labeled, engine.settings.evaluation.cache_dir, Selection.CENTRE)
    first = chosen[0]
    report: dict[str, object] = {"provenance": provenance(), "dataset": str(args.dataset), "reference": first.key}
    for point in chosen[1:]:
        acquired = templates[first].acquired & templates[point].acquired
        result = compare(templates[first].vectors, templates[point].vectors, labeled.subjects, acquired,
                         _table_path(point))
        report[point.key] = result
        cos, change = result["same_image_cosine"], result["mixed_score_change"]
        print(f"{point.key} against {first.key} ({result['images']} images, "
              f"{result['comparisons']['non_mated']:,} non-mated comparisons):")
        print(f"  same image cosine: min {cos['min']:.5f}, p0.1 {cos['p0.1']:.5f}, median {cos['median']:.6f}")
        print(f"  mixed score change: max {change['max']:.4f}, p99.9 {change['p99.9']:.4f}, "
              f"on mated pairs max {change['mated_max']:.4f}")
        for row in result["decisions"]:
            print(f"  FMR {row['target_fmr']:g} at {row['threshold']:.4f}: FMR unmixed {row['fmr_unmixed']:.2e}, "
                  f"mixed {row['fmr_mixed']:.2e}; FNMR unmixed {100 * row['fnmr_unmixed']:.2f} %, "
                  f"mixed {100 * row['fnmr_mixed']:.2f} %")
    out = run_dir(args.out)
    write_json(out / "operating_points.json", report)
    print(f"report: {out / 'operating_points.json'}")


if __name__ == "__main__":
    main()
