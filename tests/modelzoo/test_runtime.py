"""Operating points: every runtime and precision the service supports decides
the same on real photos, at its own calibrated threshold; settings that name
no operating point, or one without a table, stop the start."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.processes import cli
from verifier.calibration import calibration_path, operating_point, serving_threshold
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.matching import similarity
from verifier.modelzoo.fetch import model_path
from verifier.modelzoo.manifest import load_manifest
from verifier.modelzoo.runtime import (
    BF16, F32, ONNXRUNTIME, OPENVINO, OpenVINOModel, OperatingPoint, openvino_has_bf16,
)
from verifier.pipeline import FaceEngine
from verifier.templates import TemplateSpec

POINTS = [OperatingPoint(ONNXRUNTIME, F32), OperatingPoint(OPENVINO, F32), OperatingPoint(OPENVINO, BF16)]

# The least cosine between one photo's templates at two operating points, for
# these four clear photos. On the 3,811 LFW dev images (README, Accuracy:
# operating points) OpenVINO f32 against ONNX Runtime f32 has median 0.999995
# (worst 0.997, where a box moved by a pixel), bf16 median 0.9991 (worst 0.950).
SAME_PRECISION_AGREEMENT = 0.9999
BF16_AGREEMENT = 0.99


def _at(settings: Settings, point: OperatingPoint) -> Settings:
    local = settings.model_copy(deep=True)
    local.models.runtime = point.runtime  # type: ignore[assignment]
    local.models.precision = point.precision  # type: ignore[assignment]
    return local


def _skip_unless_runs(point: OperatingPoint) -> None:
    if point.precision == BF16 and not openvino_has_bf16():
        pytest.skip("this processor has no bf16 instructions OpenVINO can use (AVX512-BF16 or AMX)")


@pytest.fixture(scope="module")
def engines(settings: Settings) -> dict[OperatingPoint, FaceEngine]:
    built = {}
    for point in POINTS:
        if point.precision == BF16 and not openvino_has_bf16():
            continue
        built[point] = FaceEngine.from_settings(_at(settings, point))
    return built


@pytest.mark.parametrize("point", POINTS, ids=str)
def test_each_operating_point_decides_alike_on_real_photos(
    point: OperatingPoint, engines: dict[OperatingPoint, FaceEngine], photos: dict[str, Path], settings: Settings
) -> None:
    _skip_unless_runs(point)
    engine = engines[point]
    assert engine.operating_point == point
    local = _at(settings, point)
    threshold = serving_threshold(local, engine.model_id)
    assert calibration_path(local).name == ("default.json" if point == POINTS[0] else f"default.{point.key}.json")
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
    here = {name: engine.analyse(photos[name].read_bytes()).template for name in names}
    reference = engines[POINTS[0]]
    agreement = SAME_PRECISION_AGREEMENT if point.precision == F32 else BF16_AGREEMENT
    for name in names:
        there = reference.analyse(photos[name].read_bytes()).template
        assert float(np.dot(here[name].vector, there.vector)) >= agreement, name
    for other in ("obama2.jpg", "obama3.jpg"):
        assert similarity(here["obama.jpg"], here[other], engine.template_spec) >= threshold.value, other
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        assert similarity(here[name], here["biden.jpg"], engine.template_spec) < threshold.value, name


def test_auto_takes_the_fastest_point_with_a_table(tmp_path: Path, settings: Settings) -> None:
    only_f32 = tmp_path / "calibration"
    only_f32.mkdir()
    shutil.copy(settings.matching.calibration_dir / "default.json", only_f32)
    local = settings.model_copy(deep=True)
    local.matching.calibration_dir = only_f32
    assert operating_point(local) == OperatingPoint(ONNXRUNTIME, F32)
    for point in POINTS[1:]:
        if point.precision == BF16 and not openvino_has_bf16():
            continue
        shutil.copy(settings.matching.calibration_dir / f"default.{point.key}.json", only_f32)
        assert operating_point(local) == point


def test_a_table_from_another_point_is_refused(tmp_path: Path, settings: Settings, template_spec: TemplateSpec) -> None:
    raw = json.loads((settings.matching.calibration_dir / "default.json").read_text())
    raw["precision"] = BF16
    raw["runtime"] = OPENVINO
    moved = tmp_path / "calibration"
    moved.mkdir()
    (moved / "default.openvino-f32.json").write_text(json.dumps(raw))
    local = _at(settings, POINTS[1])
    local.matching.calibration_dir = moved
    with pytest.raises(ModelPackError, match="measured at openvino-bf16, the models run at openvino-f32"):
        serving_threshold(local, template_spec.model_id)


@pytest.mark.slow
def test_the_server_refuses_a_point_without_a_table(tmp_path: Path, settings: Settings) -> None:
    only_f32 = tmp_path / "calibration"
    only_f32.mkdir()
    shutil.copy(settings.matching.calibration_dir / "default.json", only_f32)
    result = cli(tmp_path, "serve", env={"VERIFIER_MATCHING__CALIBRATION_DIR": str(only_f32),
                                         "VERIFIER_MODELS__RUNTIME": "openvino",
                                         "VERIFIER_MODELS__PRECISION": "f32"})
    assert result.returncode == 2, result.stderr
    assert "default.openvino-f32.json" in result.stderr, result.stderr
    assert "VERIFIER_MODELS__RUNTIME=openvino VERIFIER_MODELS__PRECISION=f32 verifier eval" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("name", "value"), [("RUNTIME", "tensorrt"), ("PRECISION", "int4")])
def test_a_nonsense_runtime_or_precision_stops_the_start(tmp_path: Path, name: str, value: str) -> None:
    result = cli(tmp_path, "serve", env={f"VERIFIER_MODELS__{name}": value})
    assert result.returncode == 2, result.stderr
    assert f"models.{name.lower()}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_shape_met_often_gets_a_graph_of_its_own(settings: Settings) -> None:
    """After ``static_after`` calls at one shape the background compiler gives
    it a static graph, which answers as the any-shape graph does; the number
    kept is bounded."""
    spec = load_manifest(settings.models.manifest).models["sface-128"]
    model = OpenVINOModel(model_path(settings.models.cache_dir, spec), F32, 1, static_shapes=1, static_after=2,
                          compile_interval=0.01)
    name = model.get_inputs()[0].name
    rng = np.random.default_rng(5)
    one, two = (rng.uniform(-1, 1, (n, 3, 112, 112)).astype(np.float32) for n in (1, 2))
    before = model.run(None, {name: one})[0]
    model.run(None, {name: one})
    deadline = time.monotonic() + 30
    while not model.static_shapes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert model.static_shapes() == [((1, 3, 112, 112),)]
    assert np.allclose(model.run(None, {name: one})[0], before, atol=1e-4)
    for _ in range(2):
        model.run(None, {name: two})
    deadline = time.monotonic() + 30
    while model.static_shapes() != [((2, 3, 112, 112),)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert model.static_shapes() == [((2, 3, 112, 112),)]
