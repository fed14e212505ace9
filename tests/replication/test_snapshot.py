"""A replica's snapshot over real gRPC on loopback, in process: the primary sends
its index and its store copied at the same change; the replica loads the index
while the store arrives, installs both and starts from the shipped index, or
rebuilds from the store when the shipped index is damaged; a write committed after the store is pinned is not in the copy (it
arrives on the feed)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest

from tests.watchlist.samples import local_settings, templates_of
from verifier.config import ReplicationSettings, Settings
from verifier.pipeline import FaceEngine
from verifier.replication.feed import Feed
from verifier.replication.follower import Follower
from verifier.replication.state import ReplicaState
from verifier.server.replication_servicer import ReplicationServicer
from verifier.v1 import replication_pb2_grpc as rp_grpc
from verifier.watchlist.index import WatchlistIndex, snapshot_tag
from verifier.watchlist.service import WatchlistService
from verifier.storage.faults import StoreError
from verifier.watchlist.store import SubjectEntry, WatchlistStore


@pytest.fixture()
def primary(settings: Settings, engine: FaceEngine, tmp_path: Path) -> Iterator[tuple[WatchlistService, str]]:
    service = WatchlistService.open(local_settings(settings, tmp_path / "a"), engine)
    service.load()
    service.create_watchlist("wanted", "")
    for number in range(6):
        service.enrol(SubjectEntry("wanted", f"S{number}", "warrant", "police"), templates_of(engine, 2, seed=number))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rp_grpc.add_ReplicationServicer_to_server(
        ReplicationServicer(Feed(service, ReplicationSettings()), ReplicaState(None), 64 * 1024, tmp_path / "scratch"),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        server.stop(None)
        service.close()


def _replica(settings: Settings, engine: FaceEngine, data_dir: Path, primary: str) -> tuple[WatchlistService, Follower]:
    local = settings.model_copy(deep=True)
    local.data_dir = data_dir
    service = WatchlistService.for_settings(local, engine)
    service.read_only_for = primary
    return service, Follower(service, ReplicationSettings(), ReplicaState(primary), None)


@pytest.mark.parametrize("damaged", [False, True])
def test_the_replica_starts_from_the_shipped_index_unless_it_is_damaged(
    primary: tuple[WatchlistService, str], settings: Settings, engine: FaceEngine, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, damaged: bool,
) -> None:
    source, address = primary
    replica, follower = _replica(settings, engine, tmp_path / "b", address)
    with grpc.insecure_channel(address) as channel:
        received = follower.download(rp_grpc.ReplicationStub(channel))
    assert received.index is not None and received.trailer.seq == source.store.change_seq()
    tag = snapshot_tag(received.index)
    assert tag is not None and (tag.store_id, tag.change_seq) == (source.store.store_id, received.trailer.seq)
    preloaded = received.preloaded
    if damaged:
        data = bytearray(received.index.read_bytes())
        data[len(data) // 2] ^= 0xFF
        received.index.write_bytes(bytes(data))
        # As if it had arrived so: loaded while the store arrived, it fails its digest.
        preloaded = Future()
        preloaded.set_result(WatchlistIndex.load_any(received.index))
        assert preloaded.result() is None
    replica.install_store(received.store, None, received.index, preloaded)
    with caplog.at_level(logging.INFO, logger="verifier.watchlist.service"):
        replica.recover_now()
    try:
        assert replica.ready
        expected = "watch-list index from store" if damaged else "watch-list index from snapshot"
        assert any(r.getMessage().startswith(expected) for r in caplog.records), caplog.text
        for number in (0, 5):
            found = replica.identify(templates_of(engine, 2, seed=number)[1])
            assert [c.subject.entry.subject_id for c in found.candidates] == [f"S{number}"]
        assert replica.consistency().agrees
    finally:
        replica.close()


def test_the_index_is_loaded_while_the_store_arrives_and_used_only_for_its_own_change(
    primary: tuple[WatchlistService, str], settings: Settings, engine: FaceEngine, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The primary sends its index before the store; the replica loads it while
    the store arrives. A preloaded index of another change (an earlier
    snapshot) is not used for the installed store: the index saved with that
    store is loaded instead, and the late subject is found."""
    source, address = primary
    replica, follower = _replica(settings, engine, tmp_path / "b", address)
    with grpc.insecure_channel(address) as channel:
        earlier = follower.download(rp_grpc.ReplicationStub(channel))
        assert earlier.preloaded is not None
        stale = earlier.preloaded.result()
        assert stale is not None and stale.tag.change_seq == earlier.trailer.seq
        source.enrol(SubjectEntry("wanted", "late", "warrant", "police"), templates_of(engine, 1, seed=99))
        received = follower.download(rp_grpc.ReplicationStub(channel))
    assert received.preloaded is not None and received.trailer.seq == earlier.trailer.seq + 1
    replica.install_store(received.store, None, received.index, earlier.preloaded)
    with caplog.at_level(logging.INFO, logger="verifier.watchlist.service"):
        replica.recover_now()
    try:
        assert "does not match the installed store" in caplog.text
        assert "watch-list index from snapshot" in caplog.text
        found = replica.identify(templates_of(engine, 1, seed=99)[0])
        assert [c.subject.entry.subject_id for c in found.candidates] == ["late"]
        caplog.clear()
        with grpc.insecure_channel(address) as channel:
            again = follower.download(rp_grpc.ReplicationStub(channel))
        replica.install_store(again.store, None, again.index, again.preloaded)
        with caplog.at_level(logging.INFO, logger="verifier.watchlist.service"):
            replica.recover_now()
        assert "does not match" not in caplog.text and "watch-list index from snapshot" in caplog.text
        assert replica.consistency().agrees
    finally:
        replica.close()


def test_a_write_after_the_pin_is_not_in_the_store_copy(
    primary: tuple[WatchlistService, str], engine: FaceEngine, tmp_path: Path
) -> None:
    """The store copy is read from the transaction that pinned it (opened under the
    write lock, where the index is captured): a write committed after the pin,
    before the copy is made, is not in it, so the replica gets it once, from the feed."""
    source, _ = primary
    with source.store.pinned() as pinned:
        source.enrol(SubjectEntry("wanted", "late", "warrant", "police"), templates_of(engine, 1, seed=99))
        copied = pinned.copy_to(tmp_path / "copy.sqlite3")
    copy = WatchlistStore.open_readonly(tmp_path / "copy.sqlite3", 5.0)
    try:
        assert copy.change_seq() == copied.seq == source.store.change_seq() - 1
        assert [s.entry.subject_id for s in copy.subjects()] == [f"S{n}" for n in range(6)]
    finally:
        copy.close()


def test_the_store_file_is_the_pinned_image_while_the_pin_holds(
    primary: tuple[WatchlistService, str], engine: FaceEngine, tmp_path: Path
) -> None:
    """With every logged write checkpointed when the pin begins, the leading bytes
    of the store file are the pinned store, and stay so while writes and a
    forced checkpoint go on beside it: a snapshot is read from the file, no copy."""
    source, _ = primary
    with source.store.pinned(file_image=True) as pinned:
        assert pinned.file_bytes is not None
        for number in range(20):
            source.enrol(SubjectEntry("wanted", f"late{number}", "warrant", "police"),
                         templates_of(engine, 1, seed=100 + number))
        assert not source.store.checkpoint(), "a checkpoint went past the pinned reader"
        image = tmp_path / "image.sqlite3"
        with pinned.path.open("rb") as store_file:
            image.write_bytes(store_file.read(pinned.file_bytes))
    copy = WatchlistStore.open_readonly(image, 5.0)
    try:
        assert copy.change_seq() == pinned.position.seq == source.store.change_seq() - 20
        assert [s.entry.subject_id for s in copy.subjects()] == [f"S{n}" for n in range(6)]
    finally:
        copy.close()
    with sqlite3.connect(image) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_reader_holding_older_changes_makes_the_snapshot_a_copy(
    primary: tuple[WatchlistService, str], settings: Settings, engine: FaceEngine, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader that began before the last writes keeps them in the log: the
    store file is not the pinned store, so the primary copies it (and the
    replica gets exactly the pinned change)."""
    source, address = primary
    older = sqlite3.connect(source.store_path, isolation_level=None)
    try:
        older.execute("BEGIN")
        older.execute("SELECT COUNT(*) FROM subjects").fetchone()
        source.enrol(SubjectEntry("wanted", "late", "warrant", "police"), templates_of(engine, 1, seed=99))
        with source.store.pinned(file_image=True) as pinned:
            assert pinned.file_bytes is None
        replica, follower = _replica(settings, engine, tmp_path / "b", address)
        with caplog.at_level(logging.INFO, logger="verifier.replication.feed"), \
                grpc.insecure_channel(address) as channel:
            received = follower.download(rp_grpc.ReplicationStub(channel))
        assert "copied in" in caplog.text
    finally:
        older.execute("COMMIT")
        older.close()
    replica.install_store(received.store, None, received.index, received.preloaded)
    replica.recover_now()
    try:
        assert replica.store.change_seq() == source.store.change_seq()
        assert {s.entry.subject_id for s in replica.store.subjects()} == {*(f"S{n}" for n in range(6)), "late"}
    finally:
        replica.close()


def test_a_snapshot_asked_for_at_start_that_failed_is_asked_for_again(
    primary: tuple[WatchlistService, str], settings: Settings, engine: FaceEngine, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The prefetch found the snapshot altered: nothing of it is installed; the
    follower asks again and the replica serves the primary's store."""
    source, address = primary
    local = settings.model_copy(deep=True)
    local.data_dir = tmp_path / "b"
    replica = WatchlistService.for_settings(local, engine)
    replica.read_only_for = address
    failed: Future = Future()
    failed.set_exception(StoreError(f"the snapshot from {address} arrived incomplete or altered; not installed"))
    follower = Follower(replica, ReplicationSettings(), ReplicaState(address), None, failed)
    stop = threading.Event()
    with caplog.at_level(logging.WARNING, logger="verifier.replication.follower"):
        following = threading.Thread(target=follower.run, args=(stop,), daemon=True)
        following.start()
        try:
            deadline = time.monotonic() + 30
            while not replica.ready:
                assert time.monotonic() < deadline, "the replica never served"
                time.sleep(0.05)
            assert replica.store.change_seq() == source.store.change_seq()
        finally:
            stop.set()
            following.join(timeout=30)
            replica.close()
    assert "did not arrive" in caplog.text and "asking again" in caplog.text
