"""A store that once existed is never silently made again.

With real server processes, the real `make run` and the real file system:
after `rm -rf data/watchlist` neither `watchlist init --first-run` (what
`make run` runs) nor `watchlist init` makes an empty store, naming the
evidence and the two ways on; the server keeps 1:1 checks serving and the
watch-lists out of service; a restore from backup brings back every
acknowledged enrolment; and a store begun afresh is begun only on purpose,
recorded on the audit trail. Each kind of evidence refuses on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.processes import NOT_SERVING, SERVING, cli, serving
from tests.watchlist.samples import templates_of
from verifier.client import reason_of
from verifier.config import REPO_ROOT, Settings
from verifier.pipeline import FaceEngine
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.evidence import evidence, marker_file
from verifier.watchlist.service import initialise_store

WATCHLIST = "verifier.v1.Watchlist"
FACE_VERIFIER = "verifier.v1.FaceVerifier"
FAST_RETRY = {"VERIFIER_WATCHLIST__STORE_RETRY_SECONDS": "0.2"}


def _sample(engine: FaceEngine, seed: int) -> pb.FaceSample:
    template = templates_of(engine, 1, seed)[0]
    return pb.FaceSample(template=pb.Template(model_id=template.model_id, version=template.version,
                                              dimension=template.dimension, vector=template.to_bytes()))


def _refused(result: subprocess.CompletedProcess[str], data: Path) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "existed" in result.stderr and "backup" in result.stderr, result.stderr
    assert "verifier watchlist init --start-afresh --reason" in result.stderr
    assert str(data / ".stores") in result.stderr and str(data / "audit" / "audit.sqlite3") in result.stderr
    assert not (data / "watchlist").exists(), "a refused init makes nothing"


@pytest.mark.slow
def test_a_lost_store_is_refused_not_remade_and_its_restore_serves_every_acknowledged_change(
    tmp_path: Path, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    data, backup = tmp_path / "data", tmp_path / "backup.sqlite3"
    made = cli(data, "watchlist", "init", "--first-run")
    assert made.returncode == 0, made.stderr
    (marker,) = (data / ".stores").iterdir()
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600 and stat.S_IMODE(marker.parent.stat().st_mode) == 0o700
    assert json.loads(marker.read_text())["path"] == str((data / "watchlist" / "store.sqlite3").resolve())
    with serving(data, FAST_RETRY) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        stub.CreateWatchlist(wl.CreateWatchlistRequest(name="wanted"), timeout=10)
        for number in range(5):
            stub.EnrollSubject(wl.EnrollSubjectRequest(subject=wl.Subject(watchlist="wanted", subject_id=f"S-{number}"),
                                                       samples=[_sample(engine, number)]), timeout=30)
        # The nightly backup, taken while the server serves (SQLite's online backup).
        with sqlite3.connect(data / "watchlist" / "store.sqlite3") as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
    shutil.rmtree(data / "watchlist")  # the operator's slip
    _refused(cli(data, "watchlist", "init", "--first-run"), data)
    _refused(cli(data, "watchlist", "init"), data)
    # `make run` itself, its models taken as made, with this interpreter's environment.
    run = subprocess.run(["make", "-o", "models", "run", f"BIN={Path(sys.executable).parent}"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "VERIFIER_DATA_DIR": str(data)})
    assert run.returncode != 0 and "verifier watchlist init --first-run" in run.stdout
    _refused(subprocess.CompletedProcess(run.args, 2, run.stdout, run.stderr.replace("make: ***", "")), data)
    with serving(data, FAST_RETRY) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, NOT_SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Identify(wl.IdentifyRequest(probe=_sample(engine, 0)), timeout=30)
        assert reason_of(caught.value) == "STORE_MISSING"
        verified = pb_grpc.FaceVerifierStub(channel).Verify(pb.VerifyRequest(
            probe=pb.Image(data=photos["obama.jpg"].read_bytes()),
            reference=pb.FaceSample(image=pb.Image(data=photos["obama2.jpg"].read_bytes()))), timeout=60)
        assert verified.match and server.health(channel, FACE_VERIFIER) == SERVING
        # The restore the refusal asks for, while the server runs: it comes back by itself.
        (data / "watchlist").mkdir(mode=0o700)
        shutil.copyfile(backup, data / "watchlist" / "store.sqlite3")
        server.wait_health(channel, WATCHLIST, SERVING, timeout=30)
        for number in range(5):
            found = stub.Identify(wl.IdentifyRequest(probe=_sample(engine, number), top_k=1), timeout=30)
            assert [c.subject_id for c in found.candidates] == [f"S-{number}"]
    again = cli(data, "watchlist", "init", "--first-run")
    assert again.returncode == 0 and "not a first run" in again.stdout


def test_starting_afresh_is_on_purpose_and_on_the_audit_trail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli(data, "watchlist", "init").returncode == 0
    old_id = json.loads(next((data / ".stores").iterdir()).read_text())["store_id"]
    (data / "watchlist" / "store.sqlite3").unlink()
    (data / "watchlist" / "store.sqlite3-wal").write_bytes(b"the old store's log")
    for args in (("--start-afresh",), ("--start-afresh", "--reason", " "), ("--reason", "no flag"),
                 ("--start-afresh", "--first-run", "--reason", "both")):
        refused = cli(data, "watchlist", "init", *args)
        assert refused.returncode == 2 and not (data / "watchlist" / "store.sqlite3").exists(), refused.stderr
    begun = cli(data, "watchlist", "init", "--start-afresh", "--reason", "store lost with disk 2, ticket 4711")
    assert begun.returncode == 0, begun.stderr
    (aside,) = (data / "watchlist").glob("store.sqlite3.before-afresh-*-wal")
    assert aside.read_bytes() == b"the old store's log" and str(aside) in begun.stdout
    records = [json.loads(line) for line in cli(data, "audit", "export", "-").stdout.splitlines()]
    afresh = [r for r in records if r["rpc"] == "cli:watchlist init/StartAfresh" and r["outcome"] == "OK"]
    assert len(afresh) == 1 and "ticket 4711" in afresh[0]["decision"]
    assert old_id in afresh[0]["decision"], "the record names the store it replaces"
    new_id = json.loads(next((data / ".stores").iterdir()).read_text())["store_id"]
    assert new_id != old_id
    assert cli(data, "watchlist", "init", "--start-afresh", "--reason", "again").returncode == 2  # never over a store


def test_each_kind_of_evidence_refuses_alone(settings: Settings, tmp_path: Path) -> None:
    def fresh(name: str) -> Settings:
        local = settings.model_copy(deep=True)
        local.data_dir = tmp_path / name
        return local

    assert evidence(fresh("never")) == []
    cases = {
        "marker": (lambda s: (initialise_store(s), _remember(s), shutil.rmtree(s.data_dir / "watchlist")),
                   [".stores"]),
        "key": (lambda s: _write(s.registry.key_file(s.data_dir)), ["document key"]),
        "registry index": (lambda s: _write(s.registry.snapshot_file(s.data_dir)), ["saved registry index"]),
        "replica download": (lambda s: _write(Path(f"{s.watchlist.store_file(s.data_dir)}.incoming")),
                             ["store's folder", "store.sqlite3.incoming"]),
        "index": (lambda s: _write(s.watchlist.snapshot_file(s.data_dir)), ["saved watch-list index", "folder"]),
    }
    for name, (make, expected) in cases.items():
        local = fresh(name)
        make(local)
        found = evidence(local)
        for words in expected:
            assert any(words in item for item in found), (name, words, found)


def _remember(settings: Settings) -> None:
    from verifier.watchlist.evidence import remember

    remember(settings, "an-id")
    assert marker_file(settings).exists()


def _write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
