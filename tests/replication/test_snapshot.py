"""A replica's snapshot over real gRPC on loopback, in process: the primary sends
its store and its index saved at the same change; the replica installs both and
starts from the shipped index, or rebuilds from the store when the shipped index
is damaged; a write committed after the store is pinned is not in the copy (it
arrives on the feed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
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
from verifier.watchlist.index import snapshot_tag
from verifier.watchlist.service import WatchlistService
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
    if damaged:
        data = bytearray(received.index.read_bytes())
        data[len(data) // 2] ^= 0xFF
        received.index.write_bytes(bytes(data))
    replica.install_store(received.store, None, received.index)
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
