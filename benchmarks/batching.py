"""Does batching pay on this machine? Per-face model time against batch size and threads.

    .venv/bin/python -m benchmarks.batching [--runs 60] [--points onnxruntime-f32 openvino-bf16]

Micro-batching embeddings across concurrent requests only pays if a batch of
N costs clearly less than N single runs; this prints the per-item time of
each model of the pack at batch 1, 2, 4 and 8, with one and two threads, at
each operating point (runtime and precision; by default every one this CPU
runs), and the execution provider in use (CUDA where present).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from verifier.config import get_settings
from verifier.modelzoo.fetch import model_path
from verifier.modelzoo.manifest import load_manifest
from verifier.modelzoo.runtime import BF16, F32, ONNXRUNTIME, OPENVINO, OperatingPoint, cpu_features, openvino_has_bf16
from verifier.modelzoo.session import open_model

BATCHES = (1, 2, 4, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    points = [f"{ONNXRUNTIME}-{F32}", f"{OPENVINO}-{F32}"] + ([f"{OPENVINO}-{BF16}"] if openvino_has_bf16() else [])
    parser.add_argument("--points", nargs="+", default=points)
    args = parser.parse_args()
    settings = get_settings()
    pack = load_manifest(settings.models.manifest).pack(settings.models.pack)
    print(f"CPU features: {' '.join(cpu_features())}")
    print(f"{'model':26s} {'point':16s} {'threads':>7s} " + " ".join(f"{'b=' + str(b):>8s}" for b in BATCHES)
          + "   (ms per item)")
    for task, key in ((task, key) for task in ("detector", "landmarks", "embedder") if task in pack
                      for key in args.points):
        spec = pack[task]
        point = OperatingPoint(*key.split("-"))
        channels = 1 if spec.input["colour"] == "GREY" else 3
        for threads in (1, 2):
            options = settings.models.model_copy(update={"intra_op_threads": threads})
            session = open_model(model_path(settings.models.cache_dir, spec), options, point)
            name = session.get_inputs()[0].name
            cells = []
            for batch in BATCHES:
                feed = {name: np.zeros((batch, channels, spec.input["height"], spec.input["width"]), np.float32)}
                for _ in range(5):
                    session.run(None, feed)
                samples = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    session.run(None, feed)
                    samples.append((time.perf_counter() - start) * 1000.0 / batch)
                cells.append(f"{statistics.median(samples):8.2f}")
            print(f"{spec.name:26s} {key:16s} {threads:7d} " + " ".join(cells) + f"   {session.get_providers()[0]}")


if __name__ == "__main__":
    main()
