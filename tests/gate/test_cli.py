"""`verifier screen` as a real process: JSON out, exit codes 0/3/4/2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import loopback_server
from tests.processes import cli
from verifier.config import Settings
from verifier.pipeline import FaceEngine


def test_in_process_without_a_store_refers_with_the_reason(tmp_path: Path, photos: dict[str, Path]) -> None:
    result = cli(tmp_path, "screen", str(photos["obama2.jpg"]), "--reference", str(photos["obama.jpg"]))
    assert result.returncode == 4, result.stderr
    answer = json.loads(result.stdout)
    assert answer["decision"] == "REFER" and "WATCHLIST_UNAVAILABLE" in answer["reasons"]
    assert answer["match"] is True


def test_against_a_server_accepts_and_refuses_bad_input(
    tmp_path: Path, settings: Settings, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    with loopback_server(settings, engine, tmp_path / "server", watchlist=True) as address:
        _wait_for_watchlists(address)
        accepted = cli(tmp_path, "screen", str(photos["obama2.jpg"]), "--reference", str(photos["obama.jpg"]),
                       "--server", address)
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        assert json.loads(accepted.stdout)["decision"] == "ACCEPT"
        garbage = tmp_path / "garbage.jpg"
        garbage.write_bytes(b"not an image at all" * 10)
        refused = cli(tmp_path, "screen", str(garbage), "--reference", str(photos["obama.jpg"]), "--server", address)
        assert refused.returncode == 2 and "IMAGE_" in refused.stderr, refused.stderr


def _wait_for_watchlists(address: str) -> None:
    """The index loads in the background after the start; a screen before that is (rightly) a REFER."""
    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        deadline = time.monotonic() + 30
        while check(health_pb2.HealthCheckRequest(service="verifier.v1.Watchlist"), timeout=5).status != (
            health_pb2.HealthCheckResponse.SERVING
        ):
            assert time.monotonic() < deadline, "the watch-lists never came up"
            time.sleep(0.05)


@pytest.mark.parametrize("missing", ["live", "reference"])
def test_an_unreadable_file_exits_2(tmp_path: Path, photos: dict[str, Path], missing: str) -> None:
    live = tmp_path / "nope.jpg" if missing == "live" else photos["obama2.jpg"]
    reference = tmp_path / "nope.jpg" if missing == "reference" else photos["obama.jpg"]
    result = cli(tmp_path, "screen", str(live), "--reference", str(reference))
    assert result.returncode == 2 and "cannot read" in result.stderr
