"""The drift monitor: counts only, bounded; an alarm only where the live rate is above
the line with confidence; the counts survive a restart and `verifier calibration status` reads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import loopback_server
from verifier import drift
from verifier.bounds import comparisons_to_detect
from verifier.cli import build_parser
from verifier.config import Settings
from verifier.drift import BINS, IDENTIFICATION, VERIFICATION, DriftMonitor
from verifier.pipeline import FaceEngine

THRESHOLD = 0.37
TARGET = 1e-3


def _traffic(monitor: DriftMonitor, n: int, rate: float, seed: int = 3) -> None:
    """``n`` non-mated comparisons of which a share ``rate`` reach the threshold."""
    rng = np.random.default_rng(seed)
    for above in rng.random(n) < rate:
        score = THRESHOLD + 0.05 if above else float(rng.uniform(-0.3, THRESHOLD - 0.01))
        monitor.observe(VERIFICATION, score, THRESHOLD, TARGET)


def test_a_3x_inflation_is_seen_after_the_stated_comparisons_and_the_target_rate_is_not() -> None:
    needed = comparisons_to_detect(TARGET, 3.0, 2.0, 0.95, 0.9)
    assert 20_000 <= needed <= 24_000
    inflated, held = DriftMonitor(factor=2.0), DriftMonitor(factor=2.0)
    _traffic(inflated, needed, 3 * TARGET)
    _traffic(held, needed, TARGET)
    (status, _), (steady, _) = inflated.status(), held.status()
    assert status.alarm and status.low > 2 * TARGET and "ALARM" in status.describe()
    assert not steady.alarm and steady.low <= TARGET <= steady.high


def test_what_is_kept_is_counts_in_a_fixed_number_of_bins(tmp_path: Path) -> None:
    monitor = DriftMonitor(path=tmp_path / "drift.json", save_every=1000)
    _traffic(monitor, 2500, TARGET)
    monitor.observe(IDENTIFICATION, None, 0.47, 1e-2)
    monitor.observe(IDENTIFICATION, 0.52, 0.47, 1e-2)
    document = json.loads((tmp_path / "drift.json").read_text())
    assert set(document) == {"schema", "confidence", "factor", "streams"}
    for stream in document["streams"].values():
        assert set(stream) == {"observed", "errors", "target", "histogram"} and len(stream["histogram"]) == BINS
    # Saved every 1,000 outcomes: the last 502 are not on disk yet.
    assert document["streams"][VERIFICATION]["observed"] == 2000
    monitor.save()
    again = DriftMonitor()
    again.configure(2.0, 0.95, tmp_path / "drift.json")
    verification, identification = again.status()
    assert verification.observed == 2500 and (identification.observed, identification.errors) == (2, 1)


def test_calibration_status_reads_the_counts_and_exits_1_on_an_alarm(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "drift.json"
    monitor = DriftMonitor(path=path)
    _traffic(monitor, 30_000, 4 * TARGET)
    monitor.save()
    args = build_parser().parse_args(["calibration", "status", "--file", str(path)])
    assert args.handler(args, settings) == 1
    printed = capsys.readouterr().out
    assert "verification:" in printed and "ALARM" in printed and "after about" in printed
    assert "at the threshold served for FMR 0.001" in printed


def test_saving_never_fails_the_outcome_it_comes_with(tmp_path: Path) -> None:
    """Many threads reaching the save at once, and a folder that cannot be written: counted, not raised."""
    import threading

    monitor = DriftMonitor(path=tmp_path / "drift.json", save_every=5)
    threads = [threading.Thread(target=_traffic, args=(monitor, 400, TARGET, seed)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert monitor.status()[0].observed == 3200
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    unwritable = DriftMonitor(path=blocked / "drift.json", save_every=1)
    unwritable.observe(VERIFICATION, 0.1, THRESHOLD, TARGET)
    assert unwritable.status()[0].observed == 1


def test_a_server_that_stops_saves_every_count(settings: Settings, engine: FaceEngine, tmp_path: Path) -> None:
    """The periodic save may be up to ``save_every`` outcomes behind; a graceful stop writes the rest."""
    with loopback_server(settings, engine, tmp_path, watchlist=False):
        drift.MONITOR.observe(VERIFICATION, 0.1, THRESHOLD, TARGET)
        counted = drift.MONITOR.snapshot()["streams"]
    assert settings.matching.drift_path is not None
    saved = json.loads((tmp_path / settings.matching.drift_path).read_text())["streams"]
    assert saved[VERIFICATION]["observed"] == counted[VERIFICATION]["observed"] >= 1
    assert saved[VERIFICATION]["histogram"] == counted[VERIFICATION]["histogram"]
