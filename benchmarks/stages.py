"""Median time of each pipeline stage for a 640x480 JPEG on one thread.

    .venv/bin/python -m benchmarks.stages [--runs 200]

Each stage is timed on its own, many times, after a warm-up; the printout is
the median and p90 in milliseconds, and the models alone (the session run
without pre- or post-processing) for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks.samples import capture_jpeg
from verifier.config import get_settings
from verifier.face.align import align
from verifier.imaging import ImageUse
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest
from verifier.pipeline import FaceEngine


def _time(fn: Callable[[], object], runs: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    settings = get_settings()
    settings.models.intra_op_threads = 1
    settings.models.idle_intra_op_threads = 1
    engine = FaceEngine.from_settings(settings)
    manifest = load_manifest(settings.models.manifest)
    photo = fetch_asset(manifest.assets["face-recognition-photos"], settings.models.cache_dir)["obama.jpg"].read_bytes()
    box = engine.analyse(photo).face.box
    data = capture_jpeg(photo, (float(box[0]), float(box[1]), float(box[2]), float(box[3])))
    image = engine.decoder.decode(data, ImageUse.LIVE)
    box = engine.detector.detect_batch([image.bgr])[0][0].box
    points = engine.landmarks.five_points([(image.bgr, box)])[0]
    crop = align(image.bgr, points, engine.embedder.input_size)

    def raw(model: object, shape: tuple[int, ...]) -> Callable[[], object]:
        session = model.session  # type: ignore[attr-defined]
        feed = {session.get_inputs()[0].name: np.zeros(shape, np.float32)}
        return lambda: session.run(None, feed)

    stages = {
        "decode": lambda: engine.decoder.decode(data, ImageUse.LIVE),
        "detect": lambda: engine.detector.detect_batch([image.bgr]),
        "landmarks": lambda: engine.landmarks.five_points([(image.bgr, box)]),
        "align": lambda: align(image.bgr, points, engine.embedder.input_size),
        "embed": lambda: engine.embedder.embed([crop]),
        "whole pipeline": lambda: engine.analyse(data),
    }
    models_alone = {
        "detect": raw(engine.detector, (1, 3, engine.detector.contract.height, engine.detector.contract.width)),
        "landmarks": raw(engine.landmarks, (1, 1, engine.landmarks.contract.height, engine.landmarks.contract.width)),
        "embed": raw(engine.embedder, (1, 3, engine.embedder.input_size, engine.embedder.input_size)),
    }
    print(f"640x480 JPEG ({len(data)} bytes), one thread, {args.runs} runs per stage, model {engine.model_id}")
    print(f"{'stage':16s} {'median ms':>10s} {'p90 ms':>8s} {'model alone':>12s}")
    for name, fn in stages.items():
        samples = _time(fn, args.runs)
        alone = ""
        if name in models_alone:
            alone = f"{statistics.median(_time(models_alone[name], args.runs)):12.2f}"
        p90 = float(np.percentile(samples, 90))
        print(f"{name:16s} {statistics.median(samples):10.2f} {p90:8.2f} {alone}")


if __name__ == "__main__":
    main()
