"""ONNX Runtime sessions, built one way for every model."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from verifier.config import ModelSettings
from verifier.errors import ModelPackError

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


def create_session(path: Path, settings: ModelSettings) -> ort.InferenceSession:
    """A session tuned for a small CPU box: few threads, full graph optimisation,
    denormals flushed in case a deployer's model still carries them."""
    if not path.exists():
        raise ModelPackError(f"model file {path} is missing: run `verifier models fetch`")
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers_for(settings.execution_provider))
