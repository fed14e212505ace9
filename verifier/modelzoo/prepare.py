"""Turn a model file as shipped into the ONNX graph we serve.

Each step is named in the manifest's ``prepare`` list and is deterministic, so
the prepared file's sha256 can be pinned next to the source's.
"""

from __future__ import annotations

import ast
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


def onnx_from_bytes_literal(src: Path, dst: Path) -> None:
    """Take an ONNX model shipped as a Python module's one bytes literal.

    The module is parsed, never imported or run: its only top-level assignment
    of a bytes constant is the model.
    """
    tree = ast.parse(src.read_text(), filename=src.name)
    literals = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, bytes)
    ]
    if len(literals) != 1:
        raise ModelPackError(f"{src.name} holds {len(literals)} top-level bytes literals, expected one")
    dst.write_bytes(literals[0])


def _dequantised(weights: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    """DequantizeLinear of constants: per tensor, per axis, or per block along ``axis``."""
    weights = weights.astype(np.float32)
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return ((weights - zero.reshape(())) * scale.reshape(())).astype(np.float32)
    axis = axis % weights.ndim
    if block:
        scale = np.repeat(scale, block, axis=axis).take(range(weights.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(weights.shape[axis]), axis=axis)
    else:
        shape = [1] * weights.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((weights - zero) * scale).astype(np.float32)


def dequantize_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store quantised weights as float32: fold every ``DequantizeLinear`` of a
    constant (and a constant ``Reshape`` right after it) into one initialiser.

    Block-quantised graphs need a recent opset and run their weights through a
    dequantise on every call; the float graph gives the same values the shipped
    one computes, in the plain operators the rest of the preparation knows.
    """
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    folded: dict[str, np.ndarray] = {}
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "DequantizeLinear" and all(name in constants for name in inputs):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            zero = constants[inputs[2]] if len(inputs) > 2 else None
            value = _dequantised(constants[inputs[0]], constants[inputs[1]], zero, attrs.get("axis", 1),
                                 attrs.get("block_size", 0))
        elif node.op_type == "Reshape" and inputs[0] in folded and inputs[1] in constants:
            source = folded.pop(inputs[0])
            value = source.reshape([int(d) if d else source.shape[i] for i, d in enumerate(constants[inputs[1]])])
        else:
            kept.append(node)
            continue
        folded[node.output[0]] = value
        constants[node.output[0]] = value
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in folded.items())
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    # Graphs of the old IR list weights as inputs too; drop those no node reads.
    for value in [v for v in graph.input if v.name not in used]:
        graph.input.remove(value)
    initialisers = {t.name for t in graph.initializer}
    for value in [v for v in graph.input if v.name in initialisers]:
        graph.input.remove(value)
    return model


def symbolic_spatial(model: onnx.ModelProto) -> onnx.ModelProto:
    """Let a fully convolutional detector take any input height and width.

    The input's height and width become symbolic, and constant Reshape targets
    of activations of the form (batch, cells, channels) get -1 for the cells, so
    the per-level outputs follow the input size.
    """
    graph = model.graph
    initialisers = {t.name: t for t in graph.initializer}
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims[2:], ("height", "width")):
        dim.ClearField("dim_value")
        dim.dim_param = name
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[0] in initialisers or node.input[1] not in initialisers:
            continue
        shape = numpy_helper.to_array(initialisers[node.input[1]]).copy()
        if shape.size == 3 and shape[1] > 0:
            shape[1] = -1
            initialisers[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    for value in graph.output:
        out_dims = value.type.tensor_type.shape.dim
        if len(out_dims) == 3:
            out_dims[1].ClearField("dim_value")
            out_dims[1].dim_param = "cells"
    del graph.value_info[:]
    return model


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


# Steps that turn a shipped file that is not yet ONNX into ONNX; only first in a list.
CONVERTERS: dict[str, Callable[[Path, Path], None]] = {
    "tflite2onnx": tflite_to_onnx,
    "onnx_from_bytes_literal": onnx_from_bytes_literal,
}

_GRAPH_STEPS: dict[str, Callable[[onnx.ModelProto], onnx.ModelProto]] = {
    "dequantize_weights": dequantize_weights,
    "symbolic_spatial": symbolic_spatial,
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


def _run(path: Path, feed: np.ndarray) -> list[np.ndarray]:
    """Every output of the model for one input."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})


def run_opencv(path: Path, feed: np.ndarray) -> list[np.ndarray]:
    """Every output of the model run by OpenCV's DNN module, in the graph's output order.

    The block-quantised graphs OpenCV's model zoo ships were made for this
    runtime (ONNX Runtime refuses their per-tensor ``block_size``), so it is the
    reference their float preparation is checked against.
    """
    import cv2

    model = onnx.load(str(path))
    initialisers = {t.name for t in model.graph.initializer}
    feeds = [value.name for value in model.graph.input if value.name not in initialisers]
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(feed, feeds[0])
    return [np.asarray(out) for out in net.forward([value.name for value in model.graph.output])]


# Prepare steps whose shipped graph only OpenCV's DNN module runs: the reference is run there.
OPENCV_REFERENCE = ("dequantize_weights",)


def _largest_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    if [a.shape for a in first] != [b.shape for b in second]:
        return float("inf")
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second))


# Size of each input dimension the shipped graph leaves open, in the equivalence checks.
PROBE_OPEN_DIM = 96


def _probe_input(model_path: Path, batch: int) -> np.ndarray:
    """A fixed pseudo-random input of the model's input shape, for equivalence checks."""
    model = onnx.load(str(model_path))
    dims = [d.dim_value or PROBE_OPEN_DIM for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(20261122)
    return rng.uniform(-1.0, 1.0, size=[batch, *dims[1:]]).astype(np.float32)


def prepare(src: Path, dst: Path, steps: tuple[str, ...]) -> float:
    """Apply ``steps`` to ``src`` and write ``dst``; return the largest output change.

    The prepared graph is run against the unprepared one on the same input, at
    the shipped batch size and at a larger batch, and refused if they disagree.
    """
    with tempfile.TemporaryDirectory() as tmp:
        start = src
        if steps and steps[0] in CONVERTERS:
            start = Path(tmp) / "converted.onnx"
            CONVERTERS[steps[0]](src, start)
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
        reference = run_opencv if set(steps) & set(OPENCV_REFERENCE) else _run
        drift = _largest_difference(reference(start, feed), _run(staged, feed))
        if drift > EQUIVALENCE_TOLERANCE:
            raise ModelPackError(f"prepared {dst.name} drifts from the shipped model by {drift:g}")
        if BATCH_DIM in str(model.graph.input[0].type):
            big = np.concatenate([feed] * 3)
            batched = _run(staged, big)
            single = _run(staged, feed)
            if any(
                whole.shape[0] != big.shape[0] or not np.allclose(whole[: feed.shape[0]], part, atol=EQUIVALENCE_TOLERANCE)
                for whole, part in zip(batched, single)
            ):
                raise ModelPackError(f"prepared {dst.name} does not batch consistently")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(dst))
    return drift
