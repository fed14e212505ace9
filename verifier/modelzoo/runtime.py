"""The runtime and precision a pack's models run at: its operating point.

Two CPU runtimes run the same prepared ONNX files: ONNX Runtime (also the
path to CUDA) and OpenVINO, whose CPU plugin runs bfloat16 where the processor
has instructions for it (AVX512-BF16, AMX). bf16 moves scores by up to about
0.01, enough to move a threshold, so each (runtime, precision) is its own
operating point with its own calibration table (verifier.calibration), and
the precision is always set explicitly: OpenVINO's default on a bf16-capable
CPU is bf16, which would change scores silently.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import logging
import queue
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verifier.config import ModelSettings
from verifier.errors import ModelPackError

log = logging.getLogger(__name__)


ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
F32 = "f32"
BF16 = "bf16"

# The processor features that decide what a runtime can do fast, as /proc/cpuinfo names them.
_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class OperatingPoint:
    """A runtime and a precision: what a calibration table is measured for."""

    runtime: str
    precision: str

    @property
    def key(self) -> str:
        return f"{self.runtime}-{self.precision}"

    def __str__(self) -> str:
        return self.key


DEFAULT_POINT = OperatingPoint(ONNXRUNTIME, F32)


def cpu_features() -> tuple[str, ...]:
    """The processor features among those that matter here (AVX-512, VNNI,
    BF16, AMX) that this CPU reports; empty where /proc/cpuinfo is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(flag for flag in _FEATURES if flag in flags)


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ModelPackError(
            "models.runtime = 'openvino' but the openvino package is not installed: pip install '.[openvino]'"
        ) from exc
    return openvino


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def openvino_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively on this processor."""
    if not openvino_installed():
        return False
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _openvino_points(precision: str) -> list[OperatingPoint]:
    if precision == "auto":
        return ([OperatingPoint(OPENVINO, BF16)] if openvino_has_bf16() else []) + [OperatingPoint(OPENVINO, F32)]
    if precision == BF16 and not openvino_has_bf16():
        raise ModelPackError(f"models.precision = 'bf16' but this processor has no bf16 instructions OpenVINO can "
                             f"use (features: {' '.join(cpu_features()) or 'none found'}): use 'f32' or 'auto'")
    return [OperatingPoint(OPENVINO, precision)]


def candidate_points(settings: ModelSettings, cuda: bool) -> list[OperatingPoint]:
    """The operating points the settings allow, fastest first: the caller
    takes the first one that has a calibration table. ``cuda``: whether the
    models run on ONNX Runtime's CUDA provider (then ONNX Runtime f32 only).
    ``runtime = "auto"`` on the CPU: OpenVINO where it is installed, then ONNX
    Runtime (for f32), so a pack measured only on ONNX Runtime still serves."""
    if settings.runtime == OPENVINO and cuda:
        raise ModelPackError("models.runtime = 'openvino' runs on the CPU; CUDA runs on ONNX Runtime: "
                             "set models.runtime = 'onnxruntime' or models.execution_provider = 'cpu'")
    if settings.precision == BF16 and (cuda or settings.runtime == ONNXRUNTIME):
        raise ModelPackError("models.precision = 'bf16' runs on OpenVINO on the CPU "
                             "(ONNX Runtime runs these models in f32)")
    if settings.runtime == OPENVINO:
        _openvino()
        return _openvino_points(settings.precision)
    if settings.runtime == ONNXRUNTIME or cuda:
        return [OperatingPoint(ONNXRUNTIME, F32)]
    points = _openvino_points(settings.precision) if openvino_installed() else []
    if settings.precision != BF16:
        points.append(OperatingPoint(ONNXRUNTIME, F32))
    if not points:
        _openvino()
    return points


@dataclass(frozen=True)
class Port:
    """An input or output of a compiled model, described as ONNX Runtime
    describes one: its name and shape, a symbolic dimension as a string."""

    name: str
    shape: list[int | str]


def _port(port: Any) -> Port:
    dims: list[int | str] = [dim.get_length() if dim.is_static else f"d{i}"
                             for i, dim in enumerate(port.get_partial_shape())]
    return Port(port.get_any_name(), dims)


# A graph's first inference runs alone. Observed: four requests making a fresh
# process's first inferences at once hung for good, threads waiting in
# OpenVINO's Python binding on a C++ static initialiser (__cxa_guard_acquire)
# whose owner waited for the interpreter lock. Once a graph has run, its
# callers run in parallel.
_FIRST_RUN = threading.Lock()


class _Compiled:
    """A compiled graph and its infer requests. A compiled graph is shared;
    its infer requests are not, so each call takes one from a pool (made on
    demand: as many as calls ever ran at once)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ran = threading.Event()

    def run(self, feed: dict[str, np.ndarray], wanted: Iterable[int]) -> list[np.ndarray]:
        if self._ran.is_set():
            return self._infer(feed, wanted)
        with _FIRST_RUN:
            outputs = self._infer(feed, wanted)
            self._ran.set()
            return outputs

    def _infer(self, feed: dict[str, np.ndarray], wanted: Iterable[int]) -> list[np.ndarray]:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer(feed)
            return [request.get_output_tensor(i).data.copy() for i in wanted]
        finally:
            self._requests.put(request)


class OpenVINOModel:
    """One model compiled for OpenVINO's CPU plugin, run like an ONNX Runtime
    session.

    The graph compiled for any input shape re-plans whenever the shape changes,
    and the pipeline changes it all the time (a 320x240 frame, a fine pass,
    region batches): measured, a graph compiled for one shape runs about 1.4x
    faster (README, Speed). So a shape met ``static_after`` times gets a graph
    of its own, compiled by one background thread, at most one every
    ``compile_interval`` seconds (a caller who varies frame sizes cannot buy
    compilations faster than that), the ``static_shapes`` most recently used
    kept; the any-shape graph serves every call meanwhile. In f32 both give
    the same numbers (to 1e-6); in bf16 an embedding moves by about 1e-4 in
    cosine, inside what the calibration measured across operating points."""

    # Shapes counted before the count is started afresh: a bound on memory whatever callers send.
    _SHAPES_COUNTED = 256

    def __init__(self, path: Path, precision: str, threads: int, static_shapes: int = 0,
                 static_after: int = 3, compile_interval: float = 2.0) -> None:
        ov = _openvino()
        self._core = ov.Core()
        self._path = path
        self._config = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # Several models and requests share two cores: pinned threads would fight.
            "ENABLE_CPU_PINNING": False,
            "CPU_DENORMALS_OPTIMIZATION": True,
        }
        try:
            compiled = self._core.compile_model(str(path), "CPU", self._config)
        except RuntimeError as exc:
            raise ModelPackError(f"OpenVINO cannot compile {path.name} at {precision}: {exc}") from exc
        self._any = _Compiled(compiled)
        self._inputs = [_port(port) for port in compiled.inputs]
        self._outputs = [_port(port) for port in compiled.outputs]
        self._index = {name: i for i, port in enumerate(compiled.outputs) for name in port.get_names()}
        self._static_shapes = static_shapes
        self._static_after = static_after
        self._compile_interval = compile_interval
        self._static: OrderedDict[tuple[tuple[int, ...], ...], _Compiled] = OrderedDict()
        self._seen: Counter[tuple[tuple[int, ...], ...]] = Counter()
        self._wanted: queue.SimpleQueue[tuple[tuple[int, ...], ...] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._compiler: threading.Thread | None = None
        self._stopping = threading.Event()

    def static_shapes(self) -> list[tuple[tuple[int, ...], ...]]:
        """The input shapes that have a graph of their own, least recently used first."""
        with self._lock:
            return list(self._static)

    def run(self, outputs: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]:
        wanted = range(len(self._outputs)) if outputs is None else [self._index[name] for name in outputs]
        return self._graph_for(feed).run(feed, wanted)

    def _graph_for(self, feed: dict[str, np.ndarray]) -> _Compiled:
        if self._static_shapes <= 0:
            return self._any
        shape = tuple(tuple(feed[port.name].shape) for port in self._inputs)
        with self._lock:
            graph = self._static.get(shape)
            if graph is not None:
                self._static.move_to_end(shape)
                return graph
            if len(self._seen) >= self._SHAPES_COUNTED:
                self._seen.clear()
            self._seen[shape] += 1
            if self._seen[shape] == self._static_after:
                self._wanted.put(shape)
                if self._compiler is None:
                    self._compiler = threading.Thread(target=self._compile_wanted, name=f"compile-{self._path.stem}",
                                                      daemon=True)
                    self._compiler.start()
                    # A compilation still running when the interpreter ends aborts
                    # the process (std::terminate): let it finish first.
                    atexit.register(self.stop)
        return self._any

    def stop(self) -> None:
        """End the background compiler once its current compilation is done."""
        self._stopping.set()
        if self._compiler is not None:
            self._wanted.put(None)
            self._compiler.join()

    def _compile_wanted(self) -> None:
        """The background compiler: one wanted shape at a time, paced."""
        while not self._stopping.is_set():
            shape = self._wanted.get()
            if shape is None:
                return
            model = self._core.read_model(str(self._path))
            model.reshape({port.name: list(dims) for port, dims in zip(self._inputs, shape)})
            try:
                graph = _Compiled(self._core.compile_model(model, "CPU", self._config))
            except RuntimeError:
                log.warning("OpenVINO cannot compile %s for shape %s: the any-shape graph serves it",
                            self._path.name, shape)
            else:
                with self._lock:
                    self._static[shape] = graph
                    while len(self._static) > self._static_shapes:
                        self._static.popitem(last=False)
            self._stopping.wait(self._compile_interval)

    def get_inputs(self) -> list[Port]:
        return self._inputs

    def get_outputs(self) -> list[Port]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return ["OpenVINO CPU"]
