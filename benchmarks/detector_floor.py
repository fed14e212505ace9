"""How large must a face be in the detector's input to be found? The sweep
behind ``detector.floor_input_eye_px``.

    .venv/bin/python -m benchmarks.detector_floor [--faces 600] [--eyes 8 9 10 11 12 13 14 16]

LFW dev photos pasted as heads (benchmarks.scenes) into generated
backgrounds of exactly the detector's input size, so the detector sees each
face at the given eye distance with no resizing of its own: the detector's
recall at each eye distance (a face is found when a detection's box holds
its nose tip) and the served pack's detector and score threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.reporting import provenance, run_dir, write_json
from benchmarks.scenes import DEFAULT_DATASET, background, load_photos, paste
from verifier.config import get_settings
from verifier.pipeline import FaceEngine

SEED = 1212
BATCH = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--faces", type=int, default=600)
    parser.add_argument("--eyes", type=float, nargs="+", default=[8, 9, 10, 11, 12, 13, 14, 16])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = get_settings()
    detector = FaceEngine.from_settings(settings).detector
    photos = [shots[0] for shots in load_photos(args.dataset).values()]
    rng = np.random.default_rng(SEED)
    chosen = [photos[i] for i in rng.choice(len(photos), min(args.faces, len(photos)), replace=False)]
    width, height = detector.input_size
    rows = {}
    for eyes in args.eyes:
        canvases, noses = [], []
        for photo in chosen:
            canvas = background(rng, (width, height))
            centre = (rng.uniform(3 * eyes, width - 3 * eyes), rng.uniform(3.5 * eyes, height - 3.5 * eyes))
            noses.append(paste(canvas, photo, eyes, centre)[2])
            canvases.append(canvas)
        found = 0
        for start in range(0, len(canvases), BATCH):
            for faces, nose in zip(detector.detect_inputs(canvases[start:start + BATCH]), noses[start:start + BATCH]):
                found += any(f.box[0] <= nose[0] <= f.box[2] and f.box[1] <= nose[1] <= f.box[3] for f in faces)
        rows[str(eyes)] = {"faces": len(chosen), "found": found, "recall": found / len(chosen)}
        print(f"eyes {eyes:5.1f} px in the input: {found} of {len(chosen)} found ({100 * found / len(chosen):.2f} %)")
    report = {"provenance": provenance(), "detector": detector.spec.name, "min_score": settings.detector.min_score,
              "input": [width, height], "recall": rows}
    out = run_dir(args.out) / "detector_floor.json"
    write_json(out, report)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
