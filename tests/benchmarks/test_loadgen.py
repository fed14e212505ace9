"""The load generator against a real server it starts, for a second or two per level."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from benchmarks import loadgen


@pytest.mark.slow
def test_short_run_reports_percentiles_without_errors_and_stops_its_server(tmp_path: Path) -> None:
    # Every open-loop arrival comes from this one host, one caller to admission
    # control, whose share (4 calls) a Poisson burst can pass: this test is about
    # the load generator (admission has tests of its own), so the share is wide.
    code = loadgen.main([
        "--ops", "verify-images", "verify-template", "--concurrency", "1", "--rates", "10",
        "--duration", "1.5", "--out", str(tmp_path), "--server-env", "VERIFIER_ADMISSION__MAX_PER_CALLER=64",
    ])
    assert code == 0
    results = json.loads((tmp_path / "loadgen.json").read_text())
    runs = results["runs"]
    assert [(r["operation"], r["mode"]) for r in runs] == [
        ("verify-images", "closed"), ("verify-images", "open"), ("verify-template", "closed"),
        ("verify-template", "open"),
    ]
    for run in runs:
        assert run["ok"] > 0 and run["ok"] == run["requests"]
        assert run["error_count"] == 0 and run["unexpected"] == 0
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"] <= latency["max"]
        assert run["throughput_rps"] > 0
        assert run["usage"]["server"]["cpu_cores"] > 0 and run["usage"]["server"]["rss_mb_peak"] > 50
        assert any(stage.endswith("embed") and ms > 0 for stage, ms in run["server_stage_ms_mean"].items())
    # The server's own stage times came back: a template reference spares the chip's analysis.
    stages = {r["operation"]: set(r["server_stage_ms_mean"]) for r in runs if r["mode"] == "closed"}
    assert any(stage.startswith("reference.") for stage in stages["verify-images"])
    assert not any(stage.startswith("reference.") for stage in stages["verify-template"])
    assert {t["target"] for t in results["targets"]} >= {"Verify two images, concurrency 1"}
    assert all(s["chip_bytes"] <= 20_000 and s["probe_bytes"] > s["chip_bytes"] for s in results["samples"])
    assert (tmp_path / "loadgen-closed.png").stat().st_size > 0
    assert (tmp_path / "loadgen-open.png").stat().st_size > 0
    assert not psutil.pid_exists(results["server"]["pid"])


@pytest.mark.slow
def test_verify_traveller_runs_against_a_traveller_it_registers_through_the_registry(tmp_path: Path) -> None:
    code = loadgen.main([
        "--ops", "verify-traveller", "--concurrency", "1", "--rates", "--duration", "1.5", "--out", str(tmp_path),
        "--server-env", "VERIFIER_REGISTRY__ENABLED=true",
    ])
    assert code == 0
    (run,) = json.loads((tmp_path / "loadgen.json").read_text())["runs"]
    assert (run["operation"], run["mode"]) == ("verify-traveller", "closed")
    assert run["ok"] > 0 and run["error_count"] == 0 and run["unexpected"] == 0
