"""Identification accuracy of the watch-list on the LFW dev half: rank-1, and FNIR at FPIR 1 % and 0.1 %.

    .venv/bin/python -m benchmarks.identification [--root ../shared/data/lfw-dev/images]

Every person with two or more images is enrolled from one image into a real
store and index; their other images search it, and so do the images of the
people with a single image, who are not enrolled (see verifier/evaluation/watchlist_accuracy.py).
Templates come from the evaluation cache (`verifier eval` shares it); the first
run embeds the ~5,400 images, a few minutes on one core. The same figures are
computed by brute force (every probe against every enrolled template with
numpy) as a check that the index returns the exact answer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from verifier.calibration import identification_thresholds
from verifier.config import REPO_ROOT, get_settings
from verifier.evaluation.watchlist_accuracy import evaluate
from verifier.pipeline import FaceEngine

LFW_DEV_IMAGES = REPO_ROOT.parent / "shared" / "data" / "lfw-dev" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=LFW_DEV_IMAGES, help="a folder of <person>/<image> files")
    args = parser.parse_args()
    settings = get_settings()
    engine = FaceEngine.from_settings(settings)
    accuracy, brute = evaluate(settings, engine, args.root)
    mated, non_mated = len(accuracy.mated_hit), len(accuracy.non_mated_top)
    low, high = accuracy.rank1_wilson.low, accuracy.rank1_wilson.high
    print(f"{args.root}: gallery {accuracy.gallery} people, {mated} mated searches ({accuracy.mated_fta} failed to "
          f"acquire, counted as misses), {non_mated} non-mated searches ({accuracy.non_mated_fta} more failed to "
          "acquire, left out)")
    print(f"rank-1 hit rate {100 * accuracy.rank1:.2f} % (Wilson {100 * low:.2f}-{100 * high:.2f} %)")
    for target in settings.evaluation.fpir_targets:
        point = accuracy.at_fpir(target)
        print(f"FPIR target {target:g}: threshold {point.threshold:.4f}, {point.false_positives} false positives "
              f"(FPIR {point.fpir:.4f}), FNIR {100 * point.fnir:.2f} % ({point.misses} misses; Wilson "
              f"{100 * point.fnir_wilson.low:.2f}-{100 * point.fnir_wilson.high:.2f} %)")
    served = identification_thresholds(settings, engine.model_id, engine.operating_point).for_gallery(accuracy.gallery)
    at_served = accuracy.at(served.value)
    print(f"served threshold {served.value:.4f} (stated FPIR {served.fpir:g}; {served.source}): "
          f"FPIR {at_served.fpir:.4f}, FNIR {100 * at_served.fnir:.2f} % on this set")
    agrees = abs(brute.rank1 - accuracy.rank1) < 1e-9 and all(
        abs(b.fnir - accuracy.at_fpir(b.target_fpir).fnir) < 1e-9 for b in brute.points
    )
    print(f"brute force: rank-1 {100 * brute.rank1:.2f} %, "
          + ", ".join(f"FNIR {100 * b.fnir:.2f} % at FPIR {b.target_fpir:g}" for b in brute.points)
          + (" (the same)" if agrees else " (DIFFERENT)"))


if __name__ == "__main__":
    main()
