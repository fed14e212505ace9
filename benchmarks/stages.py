"""Median time of each pipeline stage for a 640x480 JPEG on one thread, for
several packs and operating points side by side (by default the served pack at
every runtime and precision this CPU runs, and the old pack on ONNX Runtime).

    .venv/bin/python -m benchmarks.stages [--runs 200] [--columns default@openvino-bf16 fast-legacy@onnxruntime-f32]

A column is ``pack@runtime-precision`` (verifier.modelzoo.runtime).

Each stage is timed on its own, many times, after a warm-up; the printout is
the median and p90 in milliseconds, and the models alone (the session run
without pre- or post-processing) for comparison. A pack whose detector gives
the landmarks has no landmark model. The second look is the face's region cut
from the frame and looked at again (detector, twice, then the landmark model
where the pack has one): its model-alone figure is the landmark model's.
The packs are timed one after the other, so on a shared machine compare runs
made close together and repeat them: neighbours' load moves each by ±10 %.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import onnxruntime
import openvino

from benchmarks.reporting import cpu_model
from benchmarks.samples import capture_jpeg
from verifier.config import get_settings
from verifier.face.align import align
from verifier.imaging import ImageUse
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest
from verifier.modelzoo.runtime import cpu_features, openvino_has_bf16
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


def _engine(column: str) -> FaceEngine:
    pack, _, point = column.partition("@")
    runtime, _, precision = point.partition("-")
    settings = get_settings().model_copy(deep=True)
    settings.models.pack = pack
    settings.models.runtime = runtime  # type: ignore[assignment]
    settings.models.precision = precision  # type: ignore[assignment]
    settings.models.intra_op_threads = 1
    settings.models.idle_intra_op_threads = 1
    return FaceEngine.from_settings(settings)


def _capture(engine: FaceEngine) -> bytes:
    """The 640x480 gate capture every pack is timed on (framed by ``engine``'s detector)."""
    settings = engine.settings
    manifest = load_manifest(settings.models.manifest)
    photo = fetch_asset(manifest.assets["face-recognition-photos"], settings.models.cache_dir)["obama.jpg"].read_bytes()
    box = engine.analyse(photo).face.box
    return capture_jpeg(photo, (float(box[0]), float(box[1]), float(box[2]), float(box[3])))


def _settle(engine: FaceEngine, data: bytes, seconds: float) -> None:
    """Run the whole pipeline for ``seconds``, so that every shape it meets has been seen."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        engine.analyse(data)


def _pack_stages(engine: FaceEngine, data: bytes, runs: int) -> dict[str, tuple[float, float, float | None]]:
    """Per stage, (median, p90, model alone median) in ms."""
    image = engine.decoder.decode(data, ImageUse.LIVE)
    face = engine.detector.detect_batch([image.bgr])[0][0]
    look = engine.second_look([(image.bgr, face)])[0]
    points = look.region.to_image(look.points)
    crop = align(image.bgr, points, engine.embedder.input_size)

    def raw(model: object, shape: tuple[int, ...]) -> Callable[[], object]:
        session = model.session  # type: ignore[attr-defined]
        feed = {session.get_inputs()[0].name: np.zeros(shape, np.float32)}
        return lambda: session.run(None, feed)

    stages = {
        "decode": lambda: engine.decoder.decode(data, ImageUse.LIVE),
        "detect": lambda: engine.detector.detect_batch([image.bgr]),
        "second look": lambda: engine.second_look([(image.bgr, face)]),
        "align": lambda: align(image.bgr, points, engine.embedder.input_size),
        "embed": lambda: engine.embedder.embed([crop]),
        "whole pipeline": lambda: engine.analyse(data),
    }
    models_alone = {
        "detect": raw(engine.detector, (1, 3, engine.detector.contract.height, engine.detector.contract.width)),
    }
    if engine.landmarks is not None:
        models_alone["second look"] = raw(
            engine.landmarks, (1, 1, engine.landmarks.contract.height, engine.landmarks.contract.width)
        )
    for part in getattr(engine.embedder, "parts", (engine.embedder,)):
        size = part.input_size
        models_alone["embed"] = _sum(models_alone.get("embed"), raw(part, (2 if part.mirror else 1, 3, size, size)))
    measured: dict[str, tuple[float, float, float | None]] = {}
    for name, fn in stages.items():
        samples = _time(fn, runs)
        alone = statistics.median(_time(models_alone[name], runs)) if name in models_alone else None
        measured[name] = (statistics.median(samples), float(np.percentile(samples, 90)), alone)
    return measured


def _sum(first: Callable[[], object] | None, second: Callable[[], object]) -> Callable[[], object]:
    """Both runs one after the other (a fused pack's embedders)."""
    if first is None:
        return second
    return lambda: (first(), second())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds of whole-pipeline calls per column before timing: OpenVINO compiles a graph "
                             "per input shape in the background (one every 2 s), and the timings should see them")
    served = get_settings().models.pack
    points = ["onnxruntime-f32", "openvino-f32"] + (["openvino-bf16"] if openvino_has_bf16() else [])
    parser.add_argument("--columns", nargs="+",
                        default=[f"{served}@{point}" for point in points] + ["fast-legacy@onnxruntime-f32"])
    args = parser.parse_args()
    packs = list(dict.fromkeys(args.columns))
    engines = {pack: _engine(pack) for pack in packs}
    data = _capture(engines[packs[0]])
    for engine in engines.values():
        _settle(engine, data, args.settle)
    results = {pack: _pack_stages(engine, data, args.runs) for pack, engine in engines.items()}
    print(f"640x480 JPEG ({len(data)} bytes), one thread, {args.runs} runs per stage; median (p90) ms, [model alone]")
    print(f"CPU: {cpu_model()}; features: {' '.join(cpu_features())}; "
          f"onnxruntime {onnxruntime.__version__}, openvino {openvino.get_version()}")
    for pack, engine in engines.items():
        print(f"  {pack}: {engine.model_id}")
    print(f"{'stage':16s}" + "".join(f"{pack:>28s}" for pack in packs))
    for name in next(iter(results.values())):
        cells = []
        for pack in packs:
            median, p90, alone = results[pack][name]
            cells.append(f"{median:7.2f} ({p90:6.2f})" + (f" [{alone:6.2f}]" if alone is not None else " " * 9))
        print(f"{name:16s}" + "".join(f"{cell:>28s}" for cell in cells))


if __name__ == "__main__":
    main()
