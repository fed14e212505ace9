"""Execution providers and the busy/idle session choice."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.modelzoo.fetch import model_path
from verifier.modelzoo.manifest import load_manifest
from verifier.modelzoo.session import CPU, CUDA, ModelRunner, Occupancy, providers_for


def test_cpu_is_always_available() -> None:
    assert providers_for("cpu") == [CPU]
    assert providers_for("auto")[-1] == CPU


def test_asking_for_cuda_without_it_is_refused() -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("this machine has the CUDA execution provider")
    with pytest.raises(ModelPackError, match="CUDA"):
        providers_for("cuda")


def test_occupancy_counts_nested_analyses() -> None:
    occupancy = Occupancy()
    assert occupancy.alone
    with occupancy:
        assert occupancy.alone
        with occupancy:
            assert not occupancy.alone
        assert occupancy.alone


def test_runner_uses_the_wide_session_only_when_alone(settings: Settings) -> None:
    spec = load_manifest(settings.models.manifest).models["mobilefacenet-192"]
    occupancy = Occupancy()
    runner = ModelRunner(model_path(settings.models.cache_dir, spec), settings.models, occupancy)
    assert runner.idle is not None
    feed = {runner.get_inputs()[0].name: np.random.default_rng(3).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)}
    assert runner.current() is runner.idle
    alone = runner.run(None, feed)[0]
    with occupancy, occupancy:
        assert runner.current() is runner.busy
        crowded = runner.run(None, feed)[0]
    assert np.allclose(alone, crowded, atol=1e-5)
