"""The display-grid check against genuine faces under a flickering light.

A light that flickers, seen by a rolling-shutter camera, lays horizontal bands
across the frame: a periodic pattern on a genuine face, the one thing that
could make the display-grid check (:mod:`verifier.gate.display`) refer a real
traveller. This adds sinusoidal bands of a given amplitude and period (in the
aligned crop's pixels, 112 across) to every LFW dev aligned crop (from `verifier
eval`'s cache of the original condition, computed when absent) and counts how
many the check flags at the served threshold.

    .venv/bin/python -m benchmarks.display_banding [--dataset ../shared/data/lfw-dev]

For scale: mains flicker (100 or 120 Hz) read out row by row over a few
milliseconds gives bands hundreds of frame rows apart, longer than a face;
bands a few crop pixels apart need a light flickering in the kHz range.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.reporting import provenance, run_dir, write_json
from verifier.config import get_settings
from verifier.evaluation.datasets import load_set
from verifier.evaluation.erc import collect
from verifier.gate.display import DisplayPatternDetector
from verifier.pipeline import FaceEngine

SEED = 50
AMPLITUDES = (0.03, 0.05, 0.10, 0.20)
PERIODS = (8, 12, 16, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-dev")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = get_settings()
    display = DisplayPatternDetector(settings.gate.display_pattern_threshold)
    original = collect(FaceEngine.from_settings(settings), load_set(args.dataset), "original",
                       settings.evaluation.cache_dir)
    crops = [original.aligned_grey[i].astype(np.float32) for i in np.flatnonzero(original.acquired)]
    rng = np.random.default_rng(SEED)
    rows = np.arange(crops[0].shape[0], dtype=np.float32)[:, None]
    flagged: dict[str, float] = {}
    print(f"{len(crops)} genuine crops, display-grid threshold {display.threshold}")
    print("| banding amplitude | period (crop px) | flagged |\n|---|---|---|")
    for amplitude in AMPLITUDES:
        for period in PERIODS:
            count = 0
            for crop in crops:
                bands = 1 + amplitude * np.sin(2 * np.pi * rows / period + rng.uniform(0, 2 * np.pi))
                count += display.is_display(display.score(np.clip(crop * bands, 0, 255).astype(np.uint8)))
            flagged[f"{amplitude}/{period}"] = count / len(crops)
            print(f"| {100 * amplitude:.0f} % | {period} | {100 * count / len(crops):.2f} % |", flush=True)
    out = run_dir(args.out) / "display_banding.json"
    write_json(out, {"provenance": provenance(), "dataset": str(args.dataset), "crops": len(crops),
                     "threshold": display.threshold, "flagged_share": flagged})
    print(f"written: {out}")


if __name__ == "__main__":
    main()
