"""The side-by-side run with face_recognition, and how it scores accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import peer


def test_accuracy_decides_pairs_without_a_face_as_no_match() -> None:
    mated = np.array([True, True, False, False])
    result = peer.accuracy([0.9, None, 0.2, 0.6], mated, threshold=0.5)
    # 0.9 matched, the faceless mated pair missed, 0.2 rejected, 0.6 falsely matched.
    assert result["accuracy"] == 0.5
    assert result["best_accuracy"] == 0.75 and result["best_threshold"] == 0.9
    assert result["pairs_without_face"] == 1


@pytest.mark.slow
def test_side_by_side_on_lfw_pairs(lfw_dev: Path, tmp_path: Path) -> None:
    if not peer.PEER_PYTHON.exists():
        pytest.skip(f"the peer environment {peer.PEER_PYTHON.parent.parent} is absent (make peer-venv)")
    assert peer.main(["--per-fold", "1", "--warmup", "1", "--lfw", str(lfw_dev), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "peer.json").read_text())
    assert results["pairs"] == {"source": results["pairs"]["source"], "count": 10, "mated": 5}
    ours, theirs = results["systems"]["ours"], results["systems"]["peer"]
    assert ours["accuracy"]["accuracy"] >= 0.8 and theirs["accuracy"]["threshold"] == -peer.PEER_THRESHOLD
    assert ours["milliseconds"]["count"] == theirs["milliseconds"]["count"] == 10
    assert results["speedup_median"] > 1.0
    assert theirs["versions"]["face_recognition"] == "1.3.0"
    assert (tmp_path / "peer.png").stat().st_size > 0
