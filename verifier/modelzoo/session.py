"""Model sessions, built one way for every model: ONNX Runtime, or OpenVINO
(verifier.modelzoo.runtime) at the operating point the pipeline chose."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from verifier.config import ModelSettings
from verifier.errors import ModelPackError
from verifier.modelzoo.runtime import DEFAULT_POINT, OPENVINO, OpenVINOModel, OperatingPoint

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def providers_for(choice: str) -> list[str]:
    """Execution providers for a configured choice; asking for CUDA without it is an error."""
    available = ort.get_available_providers()
    if choice == "cuda":
        if CUDA not in available:
            raise ModelPackError(f"CUDA execution provider requested but ONNX Runtime offers only {available}")
        return [CUDA, CPU]
    if choice == "auto" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def create_session(
    path: Path, settings: ModelSettings, threads: int | None = None, spinning: bool = True
) -> ort.InferenceSession:
    """A session tuned for a small CPU box: few threads, full graph optimisation,
    denormals flushed in case a deployer's model still carries them."""
    if not path.exists():
        raise ModelPackError(f"model file {path} is missing: run `verifier models fetch`")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers_for(settings.execution_provider))


class Runnable(Protocol):
    """What the face classes need of a model: an ``InferenceSession`` or a :class:`ModelRunner`."""

    def run(self, outputs: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]: ...

    def get_inputs(self) -> list[Any]: ...

    def get_outputs(self) -> list[Any]: ...


class Occupancy:
    """How many analyses are running now, so a model can tell whether its
    request has the machine to itself. Used as a context manager per analysis."""

    def __init__(self) -> None:
        self._running = 0
        self._lock = threading.Lock()

    def __enter__(self) -> "Occupancy":
        with self._lock:
            self._running += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        with self._lock:
            self._running -= 1

    @property
    def alone(self) -> bool:
        return self._running <= 1


def open_model(
    path: Path, settings: ModelSettings, point: OperatingPoint, threads: int | None = None, spinning: bool = True
) -> "ort.InferenceSession | OpenVINOModel":
    """The model at ``path`` ready to run at ``point``."""
    if point.runtime == OPENVINO:
        if not path.exists():
            raise ModelPackError(f"model file {path} is missing: run `verifier models fetch`")
        return OpenVINOModel(path, point.precision, threads or settings.intra_op_threads,
                             settings.openvino_static_shapes, settings.openvino_static_after,
                             settings.openvino_compile_interval_seconds)
    return create_session(path, settings, threads, spinning)


class ModelRunner:
    """One model's sessions: single-threaded for a busy server, where concurrent
    requests already fill the cores, and multi-threaded for a request that has
    the machine to itself. Runs like an ``InferenceSession``."""

    def __init__(
        self, path: Path, settings: ModelSettings, occupancy: Occupancy, point: OperatingPoint = DEFAULT_POINT
    ) -> None:
        self.busy = open_model(path, settings, point)
        self.idle: ort.InferenceSession | OpenVINOModel | None = None
        on_cpu = self.busy.get_providers()[0] != CUDA
        if on_cpu and settings.idle_intra_op_threads > settings.intra_op_threads:
            self.idle = open_model(path, settings, point, settings.idle_intra_op_threads, settings.idle_allow_spinning)
        self.occupancy = occupancy

    def current(self) -> "ort.InferenceSession | OpenVINOModel":
        """The session that fits the load right now."""
        return self.idle if self.idle is not None and self.occupancy.alone else self.busy

    def run(self, outputs: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]:
        return self.current().run(outputs, feed)

    def get_inputs(self) -> list[Any]:
        return self.busy.get_inputs()

    def get_outputs(self) -> list[Any]:
        return self.busy.get_outputs()

    def get_providers(self) -> list[str]:
        return self.busy.get_providers()
