"""Other entrances, with real server processes, sockets and files: the
metrics port listens on loopback unless a setting says otherwise; everything
the service keeps under its data folder is owner-only, and looser modes found
at start are tightened (and logged); a store whose audit trail is gone is not
served until a new trail is begun on purpose, with the reason recorded."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.processes import SERVING, cli, free_port, serving
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

pytestmark = pytest.mark.slow

WATCHLIST = "verifier.v1.Watchlist"
SERVICE_FOLDERS = ("watchlist", "audit", "gate", "replication")


def _other_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    candidates = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent
            candidates.add(probe.getsockname()[0])
        except OSError:
            pass
    return next((a for a in sorted(candidates) if not a.startswith("127.") and a != "0.0.0.0"), None)


def _metrics(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def _insecure_everywhere(metrics_port: int) -> dict[str, str]:
    return {"VERIFIER_SERVER__HOST": "0.0.0.0", "VERIFIER_SECURITY__ALLOW_INSECURE": "true",
            "VERIFIER_SERVER__METRICS_PORT": str(metrics_port)}


def test_metrics_listen_on_loopback_even_when_the_server_listens_everywhere(tmp_path: Path) -> None:
    other = _other_address()
    if other is None:
        pytest.skip("this machine has no address but loopback")
    port = free_port()
    with serving(tmp_path, _insecure_everywhere(port)):
        assert "verifier_requests_total" in _metrics("127.0.0.1", port)
        with pytest.raises(OSError):
            _metrics(other, port)


def test_metrics_elsewhere_only_when_a_setting_says_so_and_logged(tmp_path: Path) -> None:
    other = _other_address()
    if other is None:
        pytest.skip("this machine has no address but loopback")
    port = free_port()
    with serving(tmp_path, {**_insecure_everywhere(port), "VERIFIER_SERVER__METRICS_HOST": "0.0.0.0"}) as server:
        assert "verifier_requests_total" in _metrics(other, port)
        assert "plaintext, unauthenticated HTTP" in server.log


def _modes(data: Path) -> dict[str, int]:
    """Mode of the data folder and of everything in the service's folders."""
    found = {".": stat.S_IMODE(data.stat().st_mode)}
    for name in SERVICE_FOLDERS:
        for current, _, files in os.walk(data / name):
            for path in [Path(current), *(Path(current) / f for f in files)]:
                found[str(path.relative_to(data))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def _owner_only(modes: dict[str, int], data: Path) -> list[str]:
    return [f"{name} {mode:04o}" for name, mode in modes.items()
            if mode & 0o077 or ((data / name).is_dir() and mode != 0o700)]


def _serve_and_write(data: Path) -> str:
    """Serve, write to the store (its WAL and the audit trail's grow), return the log."""
    with serving(data) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        wl_grpc.WatchlistStub(channel).CreateWatchlist(wl.CreateWatchlistRequest(name=f"l{free_port()}"), timeout=10)
        modes = _modes(data)
        log = server.log
    assert {"watchlist", "audit", "gate", "audit/audit.sqlite3", "gate/transactions.sqlite3"} <= modes.keys()
    assert any(name.endswith("-wal") for name in modes), modes
    assert not _owner_only(modes, data), _owner_only(modes, data)
    return log


def test_everything_under_the_data_folder_is_owner_only_and_looser_modes_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    previous = os.umask(0o022)  # as an ordinary shell would leave it, for `watchlist init`
    try:
        assert cli(data, "watchlist", "init").returncode == 0
    finally:
        os.umask(previous)
    assert "tightened" not in _serve_and_write(data)
    # A restore by a careless tool: group- and world-readable, a folder the service did not make.
    (data / "replication").mkdir(mode=0o755)
    (data / "replication" / "left.bin").write_bytes(b"x")
    for current, folders, files in os.walk(data):
        os.chmod(current, 0o755)
        for name in files:
            os.chmod(Path(current) / name, 0o644)
    log = _serve_and_write(data)
    assert f"tightened {data / 'audit' / 'audit.sqlite3'} from 0644 to 0600" in log
    assert f"tightened {data / 'gate'} from 0755 to 0700" in log
    assert f"tightened {data / 'replication' / 'left.bin'} from 0644 to 0600" in log


def test_a_store_without_its_audit_trail_is_not_served_until_a_trail_is_begun_on_purpose(tmp_path: Path) -> None:
    assert cli(tmp_path, "watchlist", "init").returncode == 0
    trail = tmp_path / "audit" / "audit.sqlite3"
    assert trail.exists(), "watchlist init records the store's creation on the trail"
    shutil.rmtree(tmp_path / "audit")
    refused = cli(tmp_path, "serve")
    assert refused.returncode == 2, refused.stderr
    assert str(trail) in refused.stderr and "verifier audit begin --reason" in refused.stderr
    assert "verifier.app: serving" not in refused.stderr and "Traceback" not in refused.stderr
    assert not trail.exists(), "a refused start must not begin a trail"
    again = cli(tmp_path, "watchlist", "init")
    assert again.returncode == 2 and "exists" in again.stderr and not trail.exists()
    assert cli(tmp_path, "audit", "begin", "--reason", " ").returncode == 2 and not trail.exists()
    begun = cli(tmp_path, "audit", "begin", "--reason", "trail lost with disk 2, ticket 4711")
    assert begun.returncode == 0, begun.stderr
    assert cli(tmp_path, "audit", "begin", "--reason", "twice").returncode == 2
    exported = cli(tmp_path, "audit", "export", "-")
    (record,) = [json.loads(line) for line in exported.stdout.splitlines()]
    assert record["rpc"] == "cli:audit begin" and record["outcome"] == "OK"
    assert record["decision"] == "new audit trail begun: trail lost with disk 2, ticket 4711"
    assert record["identity"].startswith("local-operator:")
    with serving(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
