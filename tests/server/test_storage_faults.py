"""Storage faults at run time, with real server processes on the real file system.

A store removed, moved or replaced under a running server takes the store's
services out (STORE_MISSING) within seconds, and no write is acknowledged into
a file that is no longer the store. A full disk (the server's file-size limit
lowered to 0 from outside, with ``prlimit``: every write to a file fails, as on
a full disk, without root) refuses what needs the disk with a reason, reports
NOT_SERVING for every service that cannot record its decisions, refers gate
travellers (never INTERNAL), and everything comes back by itself once the limit
is lifted, with nothing acknowledged lost across a SIGKILL restart.
"""

from __future__ import annotations

import resource
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.processes import NOT_SERVING, SERVING, ServerProcess, cli, serving
from verifier.client import reason_of
from verifier.pipeline import FaceEngine
from verifier.v1 import audit_pb2, audit_pb2_grpc
from verifier.v1 import gate_pb2 as gate
from verifier.v1 import gate_pb2_grpc as gate_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

pytestmark = pytest.mark.slow

WATCHLIST = "verifier.v1.Watchlist"
FACE_VERIFIER = "verifier.v1.FaceVerifier"
GATE = "verifier.v1.Gate"
FAST = {"VERIFIER_WATCHLIST__STORE_RETRY_SECONDS": "0.2", "VERIFIER_WATCHLIST__STORE_WATCH_SECONDS": "0.2",
        "VERIFIER_SERVER__STORAGE_RETRY_SECONDS": "0.2"}
UNLIMITED = resource.RLIM_INFINITY


def _template(engine: FaceEngine, seed: int) -> pb.FaceSample:
    vector = np.random.default_rng(seed).standard_normal(engine.embedder.dimension)
    vector /= np.linalg.norm(vector)
    return pb.FaceSample(template=pb.Template(model_id=engine.model_id, version=1, dimension=len(vector),
                                              vector=vector.astype("<f4").tobytes()))


def _enrol(stub: wl_grpc.WatchlistStub, engine: FaceEngine, number: int) -> wl.EnrollSubjectResponse:
    return stub.EnrollSubject(wl.EnrollSubjectRequest(
        subject=wl.Subject(watchlist="wanted", subject_id=f"S-{number}"), samples=[_template(engine, number)]),
        timeout=30)


def _refused(call, request) -> grpc.RpcError:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def _refusal(error: grpc.RpcError) -> tuple[grpc.StatusCode, str | None, dict[str, str]]:
    status = rpc_status.from_call(error)
    details: dict[str, str] = {}
    for detail in [] if status is None else status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            details = dict(info.metadata)
    return error.code(), reason_of(error), details


def _present(stub: wl_grpc.WatchlistStub, subject_id: str) -> bool:
    try:
        stub.GetSubject(wl.GetSubjectRequest(watchlist="wanted", subject_id=subject_id), timeout=10)
        return True
    except grpc.RpcError as error:
        assert reason_of(error) == "SUBJECT_NOT_FOUND", error
        return False


def _identified(stub: wl_grpc.WatchlistStub, engine: FaceEngine, number: int) -> list[str]:
    found = stub.Identify(wl.IdentifyRequest(probe=_template(engine, number), top_k=1), timeout=30)
    return [c.subject_id for c in found.candidates]


def _store_files(data: Path) -> list[Path]:
    return sorted((data / "watchlist").glob("store.sqlite3*"))


def _start(data: Path, engine: FaceEngine) -> None:
    assert cli(data, "watchlist", "init").returncode == 0


def test_a_store_moved_removed_or_replaced_while_serving_goes_out_and_takes_no_write(
    tmp_path: Path, engine: FaceEngine
) -> None:
    data, aside, other = tmp_path / "data", tmp_path / "aside", tmp_path / "other"
    aside.mkdir()
    _start(data, engine)
    assert cli(other, "watchlist", "init").returncode == 0
    with serving(data, FAST) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        stub.CreateWatchlist(wl.CreateWatchlistRequest(name="wanted"), timeout=10)
        for number in range(3):
            _enrol(stub, engine, number)

        # Moved away: the next write, at once, is refused and never happens; searches are refused.
        moved = _store_files(data)
        assert {p.name for p in moved} >= {"store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"}
        for path in moved:
            path.rename(aside / path.name)
        error = _refused(stub.EnrollSubject, wl.EnrollSubjectRequest(
            subject=wl.Subject(watchlist="wanted", subject_id="S-3"), samples=[_template(engine, 3)]))
        assert _refusal(error)[:2] == (grpc.StatusCode.UNAVAILABLE, "STORE_MISSING")
        error = _refused(stub.RemoveSubject, wl.RemoveSubjectRequest(watchlist="wanted", subject_id="S-0"))
        assert _refusal(error)[:2] == (grpc.StatusCode.UNAVAILABLE, "STORE_MISSING")
        error = _refused(stub.Identify, wl.IdentifyRequest(probe=_template(engine, 1), top_k=1))
        assert _refusal(error)[:2] == (grpc.StatusCode.UNAVAILABLE, "STORE_MISSING")
        server.wait_health(channel, WATCHLIST, NOT_SERVING, timeout=5)
        assert server.health(channel, FACE_VERIFIER) == SERVING
        assert pb_grpc.FaceVerifierStub(channel).CompareTemplates(pb.CompareTemplatesRequest(
            a=_template(engine, 1).template, b=_template(engine, 1).template), timeout=10).match

        # Put back: the same store is taken up again by itself; the refused writes never happened.
        for path in moved:
            (aside / path.name).rename(path)
        server.wait_health(channel, WATCHLIST, SERVING, timeout=20)
        assert [_present(stub, f"S-{n}") for n in range(4)] == [True, True, True, False]
        assert _identified(stub, engine, 1) == ["S-1"]

        # Removed, as `rm store.sqlite3*` does, then another store put in its place:
        # out of service at once, and the other store is not taken up while serving.
        for path in _store_files(data):
            path.unlink()
        error = _refused(stub.EnrollSubject, wl.EnrollSubjectRequest(
            subject=wl.Subject(watchlist="wanted", subject_id="S-4"), samples=[_template(engine, 4)]))
        assert _refusal(error)[:2] == (grpc.StatusCode.UNAVAILABLE, "STORE_MISSING")
        server.wait_health(channel, WATCHLIST, NOT_SERVING, timeout=5)
        shutil.copyfile(other / "watchlist" / "store.sqlite3", data / "watchlist" / "store.sqlite3")
        deadline = time.monotonic() + 10
        while "another store" not in server.log and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "is another store" in server.log
        assert server.health(channel, WATCHLIST) == NOT_SERVING
        error = _refused(stub.ListWatchlists, wl.ListWatchlistsRequest())
        assert _refusal(error)[:2] == (grpc.StatusCode.UNAVAILABLE, "STORE_MISSING")
        assert "another store" in error.details() and server.process.poll() is None


def _screen(channel: grpc.Channel, photos: dict[str, Path], transaction: str) -> gate.ScreenResponse:
    return gate_grpc.GateStub(channel).Screen(gate.ScreenRequest(
        frames=[pb.Image(data=photos["obama2.jpg"].read_bytes())],
        reference=pb.FaceSample(image=pb.Image(data=photos["obama.jpg"].read_bytes())),
        gate_id="gate-1", transaction_id=transaction), timeout=60)


def _verify(channel: grpc.Channel, engine: FaceEngine) -> pb.CompareTemplatesResponse:
    return pb_grpc.FaceVerifierStub(channel).CompareTemplates(pb.CompareTemplatesRequest(
        a=_template(engine, 1).template, b=_template(engine, 1).template), timeout=10)


def _file_size_limit(server: ServerProcess, soft: int) -> None:
    """The most the server may write into any file: 0 fails every write, as a full disk does."""
    resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (soft, UNLIMITED))


def test_a_full_disk_refuses_what_needs_it_and_everything_recovers_by_itself(
    tmp_path: Path, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    _start(tmp_path, engine)
    with serving(tmp_path, FAST, file_size_limit=UNLIMITED) as server, \
            grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        stub.CreateWatchlist(wl.CreateWatchlistRequest(name="wanted"), timeout=10)
        for number in range(4):
            _enrol(stub, engine, number)
        stub.RemoveSubject(wl.RemoveSubjectRequest(watchlist="wanted", subject_id="S-3"), timeout=10)
        assert _screen(channel, photos, "before").decision == gate.ACCEPT
        audit_pb2_grpc.AuditStub(channel).ListRecords(audit_pb2.ListRecordsRequest(), timeout=10)  # flushes

        _file_size_limit(server, 0)
        # The first Screen finds the disk full when it keeps its answer: referred, not INTERNAL.
        first = _screen(channel, photos, "first-after")
        assert first.decision == gate.REFER and first.reasons[0] == "STORAGE_FAULT", first.reasons
        error = _refused(stub.EnrollSubject, wl.EnrollSubjectRequest(
            subject=wl.Subject(watchlist="wanted", subject_id="S-4"), samples=[_template(engine, 4)]))
        code, reason, details = _refusal(error)
        assert (code, reason, details.get("store")) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", "audit")
        for service in (FACE_VERIFIER, GATE, WATCHLIST):
            server.wait_health(channel, service, NOT_SERVING, timeout=5)
        for call, request in (
            (stub.RemoveSubject, wl.RemoveSubjectRequest(watchlist="wanted", subject_id="S-0")),
            (stub.Identify, wl.IdentifyRequest(probe=_template(engine, 1))),
            (pb_grpc.FaceVerifierStub(channel).CompareTemplates, pb.CompareTemplatesRequest(
                a=_template(engine, 1).template, b=_template(engine, 1).template)),
        ):
            assert _refusal(_refused(call, request))[:2] == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
        later = _screen(channel, photos, "during")
        assert later.decision == gate.REFER and list(later.reasons) == ["STORAGE_FAULT"]
        # What needs no disk serves on: reading the lists, a subject, the trail; health itself.
        assert [w.name for w in stub.ListWatchlists(wl.ListWatchlistsRequest(), timeout=10).watchlists] == ["wanted"]
        assert _present(stub, "S-0")
        assert audit_pb2_grpc.AuditStub(channel).ListRecords(audit_pb2.ListRecordsRequest(), timeout=10).records

        _file_size_limit(server, UNLIMITED)
        for service in (FACE_VERIFIER, GATE, WATCHLIST):
            server.wait_health(channel, service, SERVING, timeout=10)
        _enrol(stub, engine, 4)
        stub.RemoveSubject(wl.RemoveSubjectRequest(watchlist="wanted", subject_id="S-0"), timeout=10)
        assert _verify(channel, engine).match
        assert _screen(channel, photos, "after").decision == gate.ACCEPT
        assert _identified(stub, engine, 4) == ["S-4"]
        assert "the audit trail" in server.log and "is written again" in server.log
        # Past the commit window, so that every decision answered is on disk before the kill.
        server.wait_health(channel, WATCHLIST, SERVING)
        stub.ListWatchlists(wl.ListWatchlistsRequest(), timeout=10)
        audit_pb2_grpc.AuditStub(channel).ListRecords(audit_pb2.ListRecordsRequest(), timeout=10)
        server.process.send_signal(signal.SIGKILL)

    with serving(tmp_path, FAST) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        assert [_present(stub, f"S-{n}") for n in range(5)] == [False, True, True, False, True]
        assert _identified(stub, engine, 2) == ["S-2"]
    verified = cli(tmp_path, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with sqlite3.connect(tmp_path / "audit" / "audit.sqlite3") as trail:
        outages = trail.execute("SELECT decision FROM records WHERE rpc = 'audit.outage'").fetchall()
        screened = trail.execute("SELECT targets, decision, reason FROM records WHERE rpc LIKE '%Screen'"
                                 " ORDER BY seq").fetchall()
    assert len(outages) == 1 and "audited calls refused meanwhile" in outages[0][0]
    # The first Screen's decision, answered before the fault was known, was kept and written after it.
    first_records = [row for row in screened if "transaction:first-after" in row[0]]
    assert first_records and first_records[-1][2].startswith("STORAGE_FAULT"), screened
