"""Regression guard of the foundation: the full pipeline (our detector and landmarks,
not the published ones) over the 3,000 LFW dev pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.config import Settings
from verifier.evaluation.cache import embed_set
from verifier.evaluation.datasets import load_set
from verifier.evaluation.evaluate import evaluate
from verifier.pipeline import FaceEngine, Selection

pytestmark = [pytest.mark.slow, pytest.mark.lfw]

MIN_ACCURACY = 0.990
MAX_FAILURE_TO_ACQUIRE = 0.005


def test_full_pipeline_on_the_lfw_dev_pairs(settings: Settings, engine: FaceEngine, lfw_dev: Path) -> None:
    labeled = load_set(lfw_dev)
    templates = embed_set(engine, labeled, settings.evaluation.cache_dir, Selection.CENTRE)
    result = evaluate(labeled, templates, settings.evaluation, settings.models.pack, "detected", "centre").result
    assert result.protocol is not None
    print(f"LFW dev: {result.protocol.mean:.4f} accuracy over {len(result.protocol.accuracies)} folds, "
          f"FTA {result.acquisition.rate:.4f}")
    assert result.protocol.mean >= MIN_ACCURACY
    assert result.acquisition.rate <= MAX_FAILURE_TO_ACQUIRE
