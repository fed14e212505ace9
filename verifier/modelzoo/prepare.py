"""Turn a model file as shipped into the ONNX graph we serve.

Each step is named in the manifest's ``prepare`` list and is deterministic, so
the prepared file's sha256 can be pinned next to the source's.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from verifier.errors import ModelPackError

# Weights this small change no output we measured but, as subnormal floats,
# make every multiply that touches them many times slower on x86.
FLUSH_BELOW = 1e-10
BATCH_DIM = "batch"
# Largest difference between the shipped and the prepared graph's outputs that
# preparation accepts (same input, batch of one and of several).
EQUIVALENCE_TOLERANCE = 1e-4


def tflite_to_onnx(src: Path, dst: Path) -> None:
    """Convert a TFLite flatbuffer to ONNX (NHWC inputs become NCHW)."""
    import tflite2onnx

    tflite2onnx.convert(str(src), str(dst))


def make_batch_symbolic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give inputs and outputs a symbolic batch dimension.

    Reshapes of activations with a constant target whose first entry is the old
    fixed batch get 0 there (copy the input's batch); reshapes of weights keep
    their shapes. Stored intermediate shapes are dropped and re-inferred.
    """
    graph = model.graph
    initialisers = {t.name: t for t in graph.initializer}
    old_batch = graph.input[0].type.tensor_type.shape.dim[0].dim_value
    for value in list(graph.input) + list(graph.output):
        if value.name in initialisers:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[0] in initialisers:
            continue
        shape_name = node.input[1]
        if shape_name not in initialisers:
            continue
        shape = numpy_helper.to_array(initialisers[shape_name]).copy()
        if shape.size and old_batch and shape[0] == old_batch:
            shape[0] = 0
            initialisers[shape_name].CopyFrom(numpy_helper.from_array(shape, shape_name))
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def flush_subnormals(model: onnx.ModelProto) -> onnx.ModelProto:
    """Zero float weights below :data:`FLUSH_BELOW` in magnitude."""
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        weights = numpy_helper.to_array(tensor)
        tiny = (weights != 0) & (np.abs(weights) < FLUSH_BELOW)
        if tiny.any():
            flushed = np.where(tiny, np.float32(0), weights).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(flushed, tensor.name))
    return model


def _prelu_sites(graph: onnx.GraphProto) -> list[tuple[str, str, np.ndarray, list[onnx.NodeProto]]]:
    """Every PReLU of the graph as (input, output, per-channel slope, nodes that make it).

    Two spellings are recognised: the ``PRelu`` operator with a constant slope,
    and the TFLite converter's ``Relu(x) + Reshape(m) * (x - Abs(x))`` with slope 2m.
    """
    initialisers = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1

    def only_use(name: str, op: str) -> onnx.NodeProto | None:
        node = producer.get(name)
        return node if node is not None and node.op_type == op and consumers.get(name) == 1 else None

    sites = []
    for node in graph.node:
        if node.op_type == "PRelu" and node.input[1] in initialisers:
            slope = numpy_helper.to_array(initialisers[node.input[1]]).reshape(-1)
            sites.append((node.input[0], node.output[0], slope, [node]))
        if node.op_type != "Add":
            continue
        relu, mul = only_use(node.input[0], "Relu"), only_use(node.input[1], "Mul")
        reshape = only_use(mul.input[0], "Reshape") if mul is not None else None
        sub = only_use(mul.input[1], "Sub") if mul is not None else None
        if relu is None or reshape is None or sub is None or reshape.input[0] not in initialisers:
            continue
        absolute = only_use(sub.input[1], "Abs")
        if absolute is None or not (relu.input[0] == sub.input[0] == absolute.input[0]):
            continue
        slope = 2 * numpy_helper.to_array(initialisers[reshape.input[0]]).reshape(-1)
        sites.append((relu.input[0], node.output[0], slope, [relu, absolute, sub, reshape, mul, node]))
    return sites


def prelu_as_scaled_relu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite each PReLU as ``(1 - s) * Relu(x) + s * x``.

    Same values, but only operators that ONNX Runtime keeps in its blocked
    (NCHWc) convolution layout: its PRelu kernel, and the converter's Abs/Sub
    spelling, force a layout change around every activation. Measured on one
    thread: MobileFaceNet 12.1 -> 7.7 ms, the 512-D embedder 14.7 -> 7.2 ms.
    """
    graph = model.graph
    # Nodes are keyed by their first output: protobuf hands out fresh wrapper
    # objects, so object identity cannot name a node.
    rewritten: dict[str, list[onnx.NodeProto]] = {}
    removed: set[str] = set()
    for i, (x, out, slope, nodes) in enumerate(_prelu_sites(graph)):
        prefix = f"prelu_{i}"
        shape = (1, -1, 1, 1)
        graph.initializer.extend([
            numpy_helper.from_array((1 - slope).reshape(shape).astype(np.float32), f"{prefix}_keep"),
            numpy_helper.from_array(slope.reshape(shape).astype(np.float32), f"{prefix}_slope"),
        ])
        rewritten[out] = [
            onnx.helper.make_node("Relu", [x], [f"{prefix}_relu"]),
            onnx.helper.make_node("Mul", [f"{prefix}_relu", f"{prefix}_keep"], [f"{prefix}_kept"]),
            onnx.helper.make_node("Mul", [x, f"{prefix}_slope"], [f"{prefix}_leak"]),
            onnx.helper.make_node("Add", [f"{prefix}_kept", f"{prefix}_leak"], [out]),
        ]
        removed.update(node.output[0] for node in nodes)
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.output[0] in rewritten:
            kept.extend(rewritten[node.output[0]])
        elif node.output[0] not in removed:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return model


_GRAPH_STEPS: dict[str, Callable[[onnx.ModelProto], onnx.ModelProto]] = {
    "symbolic_batch": make_batch_symbolic,
    "prelu_as_scaled_relu": prelu_as_scaled_relu,
    "flush_subnormals": flush_subnormals,
}


def _sort_initialisers(model: onnx.ModelProto) -> None:
    """Order weights by name: converters emit them in hash order, which would
    make the prepared file's bytes, and so its pinned sha256, vary by run."""
    ordered = sorted(model.graph.initializer, key=lambda t: t.name)
    copies = [onnx.TensorProto() for _ in ordered]
    for copy, tensor in zip(copies, ordered):
        copy.CopyFrom(tensor)
    del model.graph.initializer[:]
    model.graph.initializer.extend(copies)


def _run(path: Path, feed: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})[0]


def _probe_input(model_path: Path, batch: int) -> np.ndarray:
    """A fixed pseudo-random input of the model's input shape, for equivalence checks."""
    model = onnx.load(str(model_path))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(20261122)
    return rng.uniform(-1.0, 1.0, size=[batch, *dims[1:]]).astype(np.float32)


def prepare(src: Path, dst: Path, steps: tuple[str, ...]) -> float:
    """Apply ``steps`` to ``src`` and write ``dst``; return the largest output change.

    The prepared graph is run against the unprepared one on the same input, at
    the shipped batch size and at a larger batch, and refused if they disagree.
    """
    with tempfile.TemporaryDirectory() as tmp:
        start = src
        if steps and steps[0] == "tflite2onnx":
            start = Path(tmp) / "converted.onnx"
            tflite_to_onnx(src, start)
            steps = steps[1:]
        model = onnx.load(str(start))
        for step in steps:
            if step not in _GRAPH_STEPS:
                raise ModelPackError(f"unknown prepare step {step!r}")
            model = _GRAPH_STEPS[step](model)
        _sort_initialisers(model)
        onnx.checker.check_model(model)
        staged = Path(tmp) / "prepared.onnx"
        onnx.save(model, str(staged))

        shipped_batch = onnx.load(str(start)).graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
        feed = _probe_input(start, shipped_batch)
        drift = float(np.max(np.abs(_run(start, feed) - _run(staged, feed))))
        if drift > EQUIVALENCE_TOLERANCE:
            raise ModelPackError(f"prepared {dst.name} drifts from the shipped model by {drift:g}")
        if BATCH_DIM in str(model.graph.input[0].type):
            big = np.concatenate([feed] * 3)
            batched = _run(staged, big)
            if batched.shape[0] != big.shape[0] or not np.allclose(
                batched[: feed.shape[0]], _run(staged, feed), atol=EQUIVALENCE_TOLERANCE
            ):
                raise ModelPackError(f"prepared {dst.name} does not batch consistently")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(dst))
    return drift
