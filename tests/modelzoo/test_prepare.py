"""What preparation promises: a symbolic batch, no subnormal weights, outputs unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.modelzoo.fetch import model_path
from verifier.modelzoo.manifest import load_manifest
from verifier.modelzoo.prepare import BATCH_DIM, FLUSH_BELOW
from verifier.modelzoo.session import create_session


@pytest.fixture(scope="module", params=["ultralight-rfb-320", "faceplugin-landmark-68", "mobilefacenet-192",
                                        "faceplugin-feature-512", "faceplugin-liveness", "yunet-2023mar",
                                        "retinaface-mnet025", "sface-128", "w600k-mbf"])
def prepared(request: pytest.FixtureRequest, settings: Settings) -> tuple[str, onnx.ModelProto]:
    spec = load_manifest(settings.models.manifest).models[request.param]
    return request.param, onnx.load(str(model_path(settings.models.cache_dir, spec)))


def test_batch_dimension_is_symbolic(prepared: tuple[str, onnx.ModelProto]) -> None:
    _, model = prepared
    # RetinaFace ships its batch open already (as "batch_size") and needs no step for it.
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param in (BATCH_DIM, "batch_size")


def test_no_quantised_weights_remain(prepared: tuple[str, onnx.ModelProto]) -> None:
    _, model = prepared
    assert not [node.name for node in model.graph.node if node.op_type == "DequantizeLinear"]
    assert all(t.data_type != onnx.TensorProto.INT8 for t in model.graph.initializer)


def test_no_subnormal_weights_remain(prepared: tuple[str, onnx.ModelProto]) -> None:
    _, model = prepared
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            weights = numpy_helper.to_array(tensor)
            assert not np.any((weights != 0) & (np.abs(weights) < FLUSH_BELOW)), tensor.name


def test_runs_at_batch_three_like_three_single_runs(prepared: tuple[str, onnx.ModelProto], settings: Settings) -> None:
    name, model = prepared
    spec = load_manifest(settings.models.manifest).models[name]
    session = create_session(model_path(settings.models.cache_dir, spec), settings.models)
    # Open height and width (the detectors') take the size the manifest feeds.
    open_dims = {"height": spec.input["height"], "width": spec.input["width"]}
    dims = [d.dim_value or open_dims[d.dim_param] for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    batch = np.random.default_rng(7).uniform(-1, 1, size=[3, *dims]).astype(np.float32)
    together = session.run(None, {session.get_inputs()[0].name: batch})[0]
    apart = np.concatenate([session.run(None, {session.get_inputs()[0].name: batch[i : i + 1]})[0] for i in range(3)])
    assert together.shape[0] == 3
    assert np.allclose(together, apart, atol=1e-4)


def test_prelu_leaves_no_layout_breaking_operators(settings: Settings) -> None:
    rewritten = [spec for spec in load_manifest(settings.models.manifest).models.values()
                 if "prelu_as_scaled_relu" in spec.prepare]
    assert {spec.name for spec in rewritten} >= {"mobilefacenet-192", "faceplugin-feature-512"}
    for spec in rewritten:
        model = onnx.load(str(model_path(settings.models.cache_dir, spec)))
        # The converter's spelling needs Abs (and a Sub per activation; SFace keeps one Sub, its input scaling).
        ops = [node.op_type for node in model.graph.node]
        assert "PRelu" not in ops and "Abs" not in ops and ops.count("Sub") <= 1, spec.name


def test_a_bytes_literal_module_is_parsed_never_run(tmp_path: Path) -> None:
    """The module would write a file if it ran; only its one bytes literal is taken, and a
    module with none or two is refused."""
    from verifier.modelzoo.prepare import onnx_from_bytes_literal

    marker = tmp_path / "ran"
    module = tmp_path / "weights.py"
    module.write_text(f"open({str(marker)!r}, 'w').write('x')\nWEIGHTS = b'onnx bytes'\n")
    onnx_from_bytes_literal(module, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == b"onnx bytes" and not marker.exists()
    for text in ("WEIGHTS = 'text'\n", "A = b'1'\nB = b'2'\n"):
        module.write_text(text)
        with pytest.raises(ModelPackError, match="bytes literals"):
            onnx_from_bytes_literal(module, tmp_path / "model.onnx")


def test_block_dequantisation_repeats_each_scale_over_its_block() -> None:
    from verifier.modelzoo.prepare import _dequantised

    weights = np.arange(-6, 6, dtype=np.int8).reshape(2, 6)
    scale = np.array([[1.0, 2.0], [0.5, 4.0]], np.float32)
    zero = np.array([[0, 1], [2, 0]], np.int8)
    expected = np.array([[-6, -5, -4, -8, -6, -4], [-1, -0.5, 0, 12, 16, 20]], np.float32)
    np.testing.assert_array_equal(_dequantised(weights, scale, zero, axis=1, block=3), expected)
