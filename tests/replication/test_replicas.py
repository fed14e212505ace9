"""Replicas with real `verifier serve` processes on loopback: a new replica
starts from the primary's shipped index, changes appear on it, writes to it
are refused naming the primary; the primary is
SIGKILLed under load while the kiosk client fails over with no failed read;
the replica is promoted; the old primary, returning by mistake as a primary,
is fenced by a follower of the new epoch, then rejoins as a replica with its
unreplicated write set aside; a replica killed mid-feed resumes with no gap
and no duplicate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from tests.processes import SERVING, ServerProcess, cli, serving
from tests.watchlist.samples import unit_vectors
from verifier.client import Client, reason_of
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.v1 import replication_pb2 as rp
from verifier.v1 import replication_pb2_grpc as rp_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.store import WatchlistStore

pytestmark = pytest.mark.slow
WATCHLIST = "wanted"
WATCHLIST_SERVICE = "verifier.v1.Watchlist"


def _template(engine: FaceEngine, seed: int) -> pb.Template:
    vector = unit_vectors(1, engine.embedder.dimension, seed=seed)[0]
    return pb.Template(model_id=engine.model_id, version=1, dimension=len(vector), vector=vector.astype("<f4").tobytes())


def _enrol(engine: FaceEngine, number: int) -> wl.EnrollSubjectRequest:
    return wl.EnrollSubjectRequest(
        subject=wl.Subject(watchlist=WATCHLIST, subject_id=f"S{number:04d}", reason="warrant", source_agency="police"),
        samples=[pb.FaceSample(template=_template(engine, number))],
    )


def _probe(engine: FaceEngine, number: int) -> wl.IdentifyRequest:
    return wl.IdentifyRequest(probe=pb.FaceSample(template=_template(engine, number)), watchlists=[WATCHLIST])


def _status(address: str) -> rp.StatusResponse:
    with grpc.insecure_channel(address) as channel:
        return rp_grpc.ReplicationStub(channel).Status(rp.StatusRequest(), timeout=5)


def _wait_for(condition, timeout: float = 30.0) -> None:  # noqa: ANN001 - a zero-argument predicate
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _serving_watchlists(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST_SERVICE, SERVING)


def _replica_env(primary: ServerProcess) -> dict[str, str]:
    return {"VERIFIER_REPLICATION__REPLICA_OF": primary.address, "VERIFIER_REPLICATION__HEARTBEAT_SECONDS": "0.2"}


def _found(address: str, engine: FaceEngine, number: int) -> bool:
    with grpc.insecure_channel(address) as channel:
        hits = wl_grpc.WatchlistStub(channel).Identify(_probe(engine, number), timeout=5).candidates
    return [c.subject_id for c in hits] == [f"S{number:04d}"]


def test_changes_appear_on_the_replica_which_refuses_writes(tmp_path: Path, engine: FaceEngine) -> None:
    assert cli(tmp_path / "a", "watchlist", "init").returncode == 0
    with serving(tmp_path / "a") as primary:
        _serving_watchlists(primary)
        with grpc.insecure_channel(primary.address) as channel:
            stub = wl_grpc.WatchlistStub(channel)
            stub.CreateWatchlist(wl.CreateWatchlistRequest(name=WATCHLIST))
            for number in range(3):
                stub.EnrollSubject(_enrol(engine, number))
            with serving(tmp_path / "b", env=_replica_env(primary)) as replica:
                _serving_watchlists(replica)
                # The snapshot was asked for while the models loaded, and the primary's
                # index came with it: the replica did not rebuild it.
                assert "asked for while the models loaded" in replica.log
                assert "with the primary's index" in replica.log and "watch-list index from snapshot" in replica.log
                assert "watch-list index from store" not in replica.log
                for number in range(3, 6):
                    stub.EnrollSubject(_enrol(engine, number))
                stub.RemoveSubject(wl.RemoveSubjectRequest(watchlist=WATCHLIST, subject_id="S0001"))
                _wait_for(lambda: _status(replica.address).seq == _status(primary.address).seq)
                assert [_found(replica.address, engine, n) for n in range(6)] == [True, False, True, True, True, True]
                with grpc.insecure_channel(replica.address) as to_replica:
                    with pytest.raises(grpc.RpcError) as refused:
                        wl_grpc.WatchlistStub(to_replica).EnrollSubject(_enrol(engine, 9), timeout=5)
                    answer = wl_grpc.WatchlistStub(to_replica).Identify(_probe(engine, 3), timeout=5)
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert reason_of(refused.value) == "READ_ONLY_REPLICA" and primary.address in refused.value.details()
                assert abs(answer.data_as_of.ToMicroseconds() / 1e6 - time.time()) < 5.0
                state = _status(replica.address)
                assert (state.role, state.primary, state.connected) == ("replica", primary.address, True)


def test_failover_promotion_and_fencing(tmp_path: Path, engine: FaceEngine, settings: Settings) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(a, "watchlist", "init").returncode == 0
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()
    with serving(a) as primary, serving(b, env=_replica_env(primary)) as replica:
        _serving_watchlists(primary)
        with grpc.insecure_channel(primary.address) as channel:
            stub = wl_grpc.WatchlistStub(channel)
            stub.CreateWatchlist(wl.CreateWatchlistRequest(name=WATCHLIST))
            for number in range(5):
                stub.EnrollSubject(_enrol(engine, number))
        _serving_watchlists(replica)
        _wait_for(lambda: _status(replica.address).seq == 6)
        with Client([primary.address, replica.address]) as kiosk:
            _wait_for(lambda: kiosk.current() == primary.address)

            def read() -> None:
                number = 0
                while not stop.is_set():
                    try:
                        hits = kiosk.identify(_probe(engine, number % 5), timeout=3).candidates
                        assert [c.subject_id for c in hits] == [f"S{number % 5:04d}"]
                        answered[0] += 1
                    except (grpc.RpcError, AssertionError) as error:
                        failures.append(repr(error))
                    number += 1

            readers = [threading.Thread(target=read) for _ in range(2)]
            for reader in readers:
                reader.start()
            time.sleep(1.0)
            primary.process.kill()  # SIGKILL, under load
            primary.process.wait()
            before = answered[0]
            time.sleep(2.0)
            stop.set()
            for reader in readers:
                reader.join()
            assert failures == [] and answered[0] > before and kiosk.current() == replica.address
        state = _status(replica.address)
        assert state.connected is False and state.data_age_seconds > 1.0
        promoted = cli(b, "replica", "promote", "--address", replica.address)
        assert promoted.returncode == 0, promoted.stderr
        assert _status(replica.address).epoch == 2
        with grpc.insecure_channel(replica.address) as channel:
            wl_grpc.WatchlistStub(channel).EnrollSubject(_enrol(engine, 10), timeout=5)
        # The old primary returns by mistake as a primary (epoch 1) and takes a write no one will ever receive.
        with serving(a) as stale:
            _serving_watchlists(stale)
            with grpc.insecure_channel(stale.address) as channel:
                wl_grpc.WatchlistStub(channel).EnrollSubject(_enrol(engine, 20), timeout=5)
                new = _status(replica.address)
                hello = rp.FollowRequest(hello=rp.Hello(
                    store_id=WatchlistStore.open_readonly(b / "watchlist" / "store.sqlite3", 5).store_id,
                    from_seq=new.seq + 1, epoch=new.epoch, last_epoch=new.epoch))
                with pytest.raises(grpc.RpcError) as fenced:
                    next(iter(rp_grpc.ReplicationStub(channel).Follow(iter([hello]), timeout=5)))
                assert reason_of(fenced.value) == "STALE_EPOCH"
                with pytest.raises(grpc.RpcError) as refused:
                    wl_grpc.WatchlistStub(channel).EnrollSubject(_enrol(engine, 21), timeout=5)
                assert reason_of(refused.value) == "STALE_EPOCH"  # an old-epoch write, refused
        # Now it rejoins as a replica of the new primary: its unreplicated write is set aside.
        with serving(a, env=_replica_env(replica)) as rejoined:
            _wait_for(lambda: _status(rejoined.address).seq == _status(replica.address).seq
                      and _status(rejoined.address).epoch == 2)
            _serving_watchlists(rejoined)
            assert _found(rejoined.address, engine, 10) and not _found(rejoined.address, engine, 20)
            assert list((a / "watchlist").glob("store.sqlite3.diverged-*"))
            assert "loading a fresh snapshot" in rejoined.log


def test_a_replica_killed_mid_feed_resumes_without_gap_or_duplicate(tmp_path: Path, engine: FaceEngine) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(a, "watchlist", "init").returncode == 0
    stop = threading.Event()
    with serving(a) as primary:
        _serving_watchlists(primary)
        with grpc.insecure_channel(primary.address) as channel:
            stub = wl_grpc.WatchlistStub(channel)
            stub.CreateWatchlist(wl.CreateWatchlistRequest(name=WATCHLIST))

            def write() -> None:
                number = 0
                while not stop.is_set():
                    stub.EnrollSubject(_enrol(engine, number), timeout=10)
                    if number % 3 == 2:
                        stub.RemoveSubject(wl.RemoveSubjectRequest(watchlist=WATCHLIST, subject_id=f"S{number - 1:04d}"))
                    number += 1
                    time.sleep(0.01)

            writer = threading.Thread(target=write)
            writer.start()
            try:
                for _ in range(3):
                    with serving(b, env=_replica_env(primary)) as replica:
                        _wait_for(lambda: _status(replica.address).seq > 0)
                        time.sleep(0.7)
                        replica.process.kill()
            finally:
                stop.set()
                writer.join()
            with serving(b, env=_replica_env(primary)) as replica:
                _wait_for(lambda: _status(replica.address).seq == _status(primary.address).seq)
    theirs = WatchlistStore.open_readonly(a / "watchlist" / "store.sqlite3", 5)
    ours = WatchlistStore.open_readonly(b / "watchlist" / "store.sqlite3", 5)
    assert ours.changes_since(0, 10**6) == theirs.changes_since(0, 10**6)
    assert [c.seq for c in ours.changes_since(0, 10**6)] == list(range(1, ours.change_seq() + 1))
    assert [(s.row, s.entry) for s in ours.subjects()] == [(s.row, s.entry) for s in theirs.subjects()]
    assert ours.change_seq() > 20
