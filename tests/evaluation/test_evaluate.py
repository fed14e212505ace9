"""The whole LFW dev half through the real pipeline: the figures the README and the
calibration table quote, guarded against regressions."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.calibration import calibration_path, load_table
from verifier.config import Settings
from verifier.evaluation.cache import embed_set
from verifier.evaluation.datasets import load_set
from verifier.evaluation.evaluate import evaluate
from verifier.pipeline import FaceEngine, Selection

pytestmark = [pytest.mark.slow, pytest.mark.lfw]


def test_lfw_dev_accuracy_and_the_shipped_calibration(settings: Settings, engine: FaceEngine, lfw_dev: Path) -> None:
    labeled = load_set(lfw_dev)
    templates = embed_set(engine, labeled, settings.evaluation.cache_dir, Selection.CENTRE)
    result = evaluate(labeled, templates, settings.evaluation, settings.models.pack, "detected", "centre").result
    assert result.acquisition.rate < 0.005
    assert result.protocol is not None and result.protocol.mean > 0.985
    assert result.verification.non_mated_comparisons > 7_000_000
    assert result.verification.eer < 0.015
    by_fmr = {p.target_fmr: p for p in result.verification.points}
    assert by_fmr[1e-3].fnmr < 0.03 and by_fmr[1e-4].fnmr < 0.08
    assert by_fmr[1e-3].fnmr_bootstrap is not None
    assert by_fmr[1e-3].fnmr_bootstrap.low < by_fmr[1e-3].fnmr < by_fmr[1e-3].fnmr_bootstrap.high
    table = load_table(calibration_path(settings))
    for row in table.rows:
        assert row.threshold == pytest.approx(by_fmr[row.target_fmr].threshold, abs=2e-3), (
            "the shipped calibration no longer matches this pipeline: run `verifier eval --calibrate`"
        )
