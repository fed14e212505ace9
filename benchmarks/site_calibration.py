"""Site calibration, held out: does a site table made from one condition's non-mated
scores alone bring the measured FMR at the served threshold within 2x of the target?

    .venv/bin/python -m benchmarks.site_calibration [--conditions original,single-studio,...]

For each capture condition derived from LFW dev (as `verifier eval --condition`
derives it; ``original`` is the set as it is), the people are split in two
halves by a seeded draw. One capture of each person of the first half is the
site's folder, every pair of it non-mated: what `verifier calibration site`
takes, through the same functions (verifier.evaluation.site). The second half,
every image, stands for the site's later traffic: FMR over all its non-mated
pairs and FNMR over its mated pairs, at the pack's served threshold (before)
and at the stricter of it and the site row (after). Then the halves swap.
Templates come from the evaluation cache (`verifier eval` shares it).

    .venv/bin/python -m benchmarks.site_calibration --export single-studio /tmp/studio

writes instead one capture of each person of the set under a condition (the
first image of each, as PNG), a folder for `verifier calibration site`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from verifier.calibration import calibration_path, load_table
from verifier.config import REPO_ROOT, Settings, get_settings
from verifier.evaluation.cache import embed_set
from verifier.evaluation.cli import LANDMARKS_FILE
from verifier.evaluation.conditions import CONDITIONS
from verifier.evaluation.datasets import load_set, read_landmarks
from verifier.evaluation.metrics import count_at_or_above, count_below, cross_comparisons
from verifier.evaluation.site import MIN_CAPTURES, fmr_rows
from verifier.pipeline import FaceEngine, Selection

LFW_DEV = REPO_ROOT.parent / "shared" / "data" / "lfw-dev"
TARGETS = (1e-3, 1e-4)
SEED = 24


def _halves(subjects: np.ndarray, acquired: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    people = np.unique(subjects[acquired])
    drawn = np.random.default_rng(SEED).permutation(people)
    return drawn[: len(drawn) // 2], drawn[len(drawn) // 2:]


def _fold(vectors: np.ndarray, subjects: np.ndarray, acquired: np.ndarray, site: np.ndarray, held: np.ndarray,
          pack: dict[float, float], settings: Settings) -> dict:
    evaluation = settings.evaluation
    first = {}
    for i in np.flatnonzero(acquired):
        first.setdefault(int(subjects[i]), i)
    captures = vectors[[first[int(s)] for s in site]]
    rows, comparisons = fmr_rows(captures, evaluation.fmr_targets, evaluation.confidence, evaluation.chunk_rows)
    by_target = {row.target_fmr: row for row in rows}
    traffic = np.flatnonzero(acquired & np.isin(subjects, held))
    _, remapped = np.unique(subjects[traffic], return_inverse=True)
    held_out = cross_comparisons(vectors[traffic], remapped, np.ones(len(traffic), bool), evaluation.chunk_rows,
                                 max(TARGETS))
    result = {"site_captures": len(captures), "site_comparisons": comparisons,
              "held_out_images": len(traffic), "held_out_non_mated": len(held_out.non_mated),
              "held_out_mated": len(held_out.mated), "targets": {}}
    for target in TARGETS:
        row = by_target[target]
        after = max(pack[target], row.threshold)
        cell: dict = {"site_threshold": row.threshold, "site_supported": row.supported,
                      "site_false_matches": row.false_matches}
        for name, threshold in (("before", pack[target]), ("after", after)):
            fmr = count_at_or_above(held_out.non_mated, threshold) / len(held_out.non_mated)
            fnmr = count_below(held_out.mated, threshold) / len(held_out.mated)
            cell[name] = {"threshold": threshold, "fmr": fmr, "ratio": fmr / target, "fnmr": fnmr}
        result["targets"][str(target)] = cell
    return result


def export(root: Path, name: str, folder: Path) -> None:
    """One capture per person of the set at ``root`` under condition ``name`` (or as it is)."""
    labeled = load_set(root)
    landmarks = read_landmarks(root / LANDMARKS_FILE)
    folder.mkdir(parents=True, exist_ok=True)
    written = set()
    for i, key in enumerate(labeled.keys):
        person = labeled.subject_names[labeled.subjects[i]]
        if person in written:
            continue
        data = labeled.path(i).read_bytes()
        data = CONDITIONS[name].apply(data, landmarks.get(key)) if name in CONDITIONS else data
        (folder / f"{person}{'.png' if name in CONDITIONS else Path(key).suffix}").write_bytes(data)
        written.add(person)
    print(f"{len(written)} captures, one per person ({name}): {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=LFW_DEV)
    parser.add_argument("--conditions", default="original," + ",".join(CONDITIONS))
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "site-calibration.json")
    parser.add_argument("--export", nargs=2, metavar=("CONDITION", "FOLDER"),
                        help="write one capture per person under CONDITION (or original) to FOLDER and stop")
    args = parser.parse_args()
    if args.export:
        export(args.root, args.export[0], Path(args.export[1]))
        return
    settings = get_settings()
    engine = FaceEngine.from_settings(settings)
    labeled = load_set(args.root)
    landmarks = read_landmarks(args.root / LANDMARKS_FILE)
    table = load_table(calibration_path(settings, engine.operating_point))
    pack = {target: table.row_for(target).threshold for target in TARGETS}
    print(f"pack {settings.models.pack} at {engine.operating_point}: thresholds "
          + ", ".join(f"FMR {t:g} {v:.4f}" for t, v in pack.items()))
    print("| condition | site captures (comparisons) | target | pack threshold: FMR held out (ratio), FNMR | "
          "site threshold | served after: FMR held out (ratio), FNMR |")
    print("|---|---|---|---|---|---|")
    report = {"pack": settings.models.pack, "point": engine.operating_point.key, "seed": SEED, "conditions": {}}
    for name in [c for c in args.conditions.split(",") if c]:
        derived = CONDITIONS.get(name)
        transform = None if derived is None else (lambda data, key, d=derived: d.apply(data, landmarks.get(key)))
        templates = embed_set(engine, labeled, settings.evaluation.cache_dir, Selection.CENTRE, transform=transform)
        if templates.acquired.sum() < 2 * MIN_CAPTURES:
            reasons = sorted(set(templates.failures.values()))
            print(f"| `{name}` | {int(templates.acquired.sum())} of {len(labeled)} images acquired "
                  f"({', '.join(reasons)}): nothing to calibrate on | | | | |")
            continue
        site_half, held_half = _halves(labeled.subjects, templates.acquired)
        folds = [_fold(templates.vectors, labeled.subjects, templates.acquired, site, held, pack, settings)
                 for site, held in ((site_half, held_half), (held_half, site_half))]
        report["conditions"][name] = {"failures_to_acquire": len(templates.failures), "folds": folds}
        for fold in folds:
            for target, cell in fold["targets"].items():
                before, after = cell["before"], cell["after"]
                print(f"| `{name}` | {fold['site_captures']:,} ({fold['site_comparisons']:,}) | {float(target):g} | "
                      f"{before['threshold']:.4f}: {before['fmr']:.2e} ({before['ratio']:.2f}x), "
                      f"{100 * before['fnmr']:.2f} % | {cell['site_threshold']:.4f}"
                      f"{'' if cell['site_supported'] else ' (not supported)'} | {after['threshold']:.4f}: "
                      f"{after['fmr']:.2e} ({after['ratio']:.2f}x), {100 * after['fnmr']:.2f} % |", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.output}")


if __name__ == "__main__":
    main()
