"""Identification through the watch-list on the LFW dev half: rank-1 of at least
97 %, the exact answer of a brute-force search, and a served threshold (the
pack's 1:N calibration row for this gallery size) that keeps the false-positive
identification rate it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.calibration import identification_thresholds
from verifier.config import Settings
from verifier.evaluation.watchlist_accuracy import evaluate
from verifier.pipeline import FaceEngine

pytestmark = [pytest.mark.slow, pytest.mark.lfw]


def test_identification_on_lfw_dev(settings: Settings, engine: FaceEngine, lfw_dev: Path) -> None:
    accuracy, brute = evaluate(settings, engine, lfw_dev / "images")
    mated = len(accuracy.mated_hit)
    assert accuracy.gallery > 700 and mated > 3000 and len(accuracy.non_mated_top) > 1000
    assert accuracy.rank1 >= 0.97
    assert accuracy.rank1 == pytest.approx(brute.rank1, abs=0.5 / mated)
    for point in brute.points:
        ours = accuracy.at_fpir(point.target_fpir)
        assert ours.fpir <= point.target_fpir
        assert ours.fnir == pytest.approx(point.fnir, abs=1.5 / mated)
    thresholds = identification_thresholds(settings, engine.model_id, engine.operating_point)
    threshold = thresholds.for_gallery(accuracy.gallery)
    served = accuracy.at(threshold.value)
    assert served.fpir <= threshold.fpir
    assert served.fnir < 0.15
