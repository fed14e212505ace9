"""A replica's side: load a snapshot of the primary's store, then follow its feed.

Each change is applied durably and in order by the watch-list service (store
and index under one lock) and acknowledged to the primary; a change applied
before is skipped, a gap makes the follower reconnect from the change it needs
next, so a replica restarted mid-feed resumes with no gap and no duplicate.
While the primary cannot be reached the replica keeps serving what it holds
and tries again (backing off up to ``max_reconnect_seconds``). A primary that
says the replica's history is not its own (REPLICA_DIVERGED) gets a fresh
snapshot loaded; the old store is kept beside it, renamed, for the operator.
A primary of an older epoch than the replica has seen (STALE_EPOCH) is never
followed. Promotion stops the follower.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import grpc

from verifier.client import reason_of
from verifier.config import ReplicationSettings, Settings
from verifier.errors import Reason, VerifierError
from verifier.replication import metrics
from verifier.replication.replicated import IndexLoader, ReplicatedService
from verifier.replication.state import ReplicaState
from verifier.v1 import replication_pb2 as rp
from verifier.v1 import replication_pb2_grpc as rp_grpc
from verifier.storage.database import FILE_MODE
from verifier.storage.faults import StoreError
from verifier.storage.feed import Change, FeedGap

log = logging.getLogger(__name__)


class SnapshotSource:
    """Where a replica's snapshot comes from (the primary, over a channel with the
    replica's credentials) and where it is received (beside the store and the
    saved index, which ``load_index`` loads while the store arrives). Needs no
    model: a replica starting empty asks for its snapshot while its models
    load (:meth:`prefetch`)."""

    def __init__(
        self, primary: str, settings: ReplicationSettings, credentials: grpc.ChannelCredentials | None,
        store_path: Path, index_path: Path | None, load_index: IndexLoader,
    ) -> None:
        self.primary = primary
        self.settings = settings
        self.credentials = credentials
        self.store_path = store_path
        self.index_path = index_path
        self.load_index = load_index

    @classmethod
    def for_settings(
        cls, settings: Settings, credentials: grpc.ChannelCredentials | None, load_index: IndexLoader,
    ) -> "SnapshotSource":
        """The configured primary and this server's store and saved-index paths."""
        config = settings.watchlist
        return cls(settings.replication.replica_of or "", settings.replication, credentials,
                   config.store_file(settings.data_dir), config.snapshot_file(settings.data_dir), load_index)

    def channel(self) -> grpc.Channel:
        options = [("grpc.max_receive_message_length", -1)]
        if self.settings.primary_server_name:
            options.append(("grpc.ssl_target_name_override", self.settings.primary_server_name))
        if self.credentials is None:
            return grpc.insecure_channel(self.primary, options=options)
        return grpc.secure_channel(self.primary, self.credentials, options=options)

    def prefetch(self) -> "Future[Download]":
        """Start receiving the snapshot on a thread of its own (once, no retries:
        the follower downloads again if this fails)."""

        def fetch() -> Download:
            with self.channel() as channel:
                return self.download(rp_grpc.ReplicationStub(channel))

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica-prefetch")
        try:
            return pool.submit(fetch)
        finally:
            pool.shutdown(wait=False)

    def download(self, stub: rp_grpc.ReplicationStub) -> "Download":
        """Receive the primary's snapshot into files beside the store and the saved
        index; the store part must match the trailer's size and SHA-256 or
        nothing is kept. The index part is kept only when it arrived whole; its
        own tag and digest are checked when it is loaded."""
        target = self.store_path
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".incoming")
        index = self.index_path
        index_partial = index.with_name(index.name + ".incoming") if index is not None else None
        if index_partial is not None:
            index_partial.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = index_size = 0
        trailer = None
        preloaded: Future[Any] | None = None
        start = time.perf_counter()
        marks: dict[str, float] = {}
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb") as out, \
                _optional_file(index_partial) as index_out:
            for chunk in stub.Snapshot(rp.SnapshotRequest()):
                part = chunk.WhichOneof("part")
                if part != "index_data" and index_size and preloaded is None and index_out and index_partial:
                    # The index part is whole (a primary sends it first): load it
                    # while the store arrives. Its own trailer and digest decide
                    # whether it is sound, and the installed store's tag whether it is used.
                    index_out.flush()
                    preloaded = _preload(self.load_index, index_partial)
                    marks["index"] = time.perf_counter() - start
                if part == "trailer":
                    trailer = chunk.trailer
                    marks["received"] = time.perf_counter() - start
                    break
                if part == "index_data":
                    index_size += len(chunk.index_data)
                    if index_out is not None:
                        index_out.write(chunk.index_data)
                    continue
                digest.update(chunk.data)
                size += len(chunk.data)
                out.write(chunk.data)
            # Only the store must reach the disk before it is installed: an index
            # file cut short by a crash fails its own digest and is rebuilt.
            out.flush()
            os.fsync(out.fileno())
            marks["synced"] = time.perf_counter() - start
        shipped = index_partial is not None and index_size > 0 and trailer is not None \
            and index_size == trailer.index_size
        if trailer is None or trailer.size != size or trailer.sha256 != digest.hexdigest():
            _discard(preloaded, partial, index_partial)
            raise StoreError(f"the snapshot from {self.primary} arrived incomplete or altered; not installed")
        if not shipped:
            _discard(preloaded, index_partial)
            preloaded = None
        return Download(partial, index_partial if shipped else None, size, trailer, preloaded, marks)


class Follower:
    def __init__(
        self, service: ReplicatedService, settings: ReplicationSettings, state: ReplicaState,
        credentials: grpc.ChannelCredentials | None, prefetched: "Future[Download] | None" = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.state = state
        self.primary = state.primary or ""
        self.source = SnapshotSource(self.primary, settings, credentials, service.store_path, service.snapshot,
                                     service.load_index_file)
        # A snapshot asked for while this server's models loaded; used by the first install.
        self._prefetched = prefetched

    def download(self, stub: rp_grpc.ReplicationStub) -> "Download":
        """Receive the primary's snapshot (see :meth:`SnapshotSource.download`)."""
        return self.source.download(stub)

    def run(self, stop: threading.Event) -> None:
        """Follow until ``stop`` is set or this server is promoted."""
        wait = self.settings.reconnect_seconds
        while not stop.is_set() and self.service.read_only_for is not None:
            try:
                with self.source.channel() as channel:
                    stub = rp_grpc.ReplicationStub(channel)
                    if not self.service.store_path.exists():
                        self._install(stub, diverged=False)
                    if not self.service.ready:
                        self.service.recover_now()
                    if self.service.ready:
                        self._follow(stub, stop)
                        wait = self.settings.reconnect_seconds
            except grpc.RpcError as error:
                reason = reason_of(error)
                if reason == Reason.REPLICA_DIVERGED.value:
                    log.error("this replica's history is not the primary's: loading a fresh snapshot (%s)",
                              error.details())
                    try:
                        with self.source.channel() as channel:
                            self._install(rp_grpc.ReplicationStub(channel), diverged=True)
                        continue
                    except grpc.RpcError as again:
                        log.warning("snapshot from %s failed: %s", self.primary, again.details())
                elif reason == Reason.STALE_EPOCH.value:
                    log.error("the primary at %s is of an older epoch than this replica has seen; not following it",
                              self.primary)
                    wait = self.settings.max_reconnect_seconds
                elif error.code() != grpc.StatusCode.CANCELLED or not stop.is_set():
                    log.warning("primary %s unreachable (%s); serving what this replica holds", self.primary,
                                error.code().name)
            except VerifierError as error:
                log.error("a change from %s was refused: %s (%s)", self.primary, error.message, error.reason.value)
                wait = self.settings.max_reconnect_seconds
            except FeedGap as gap:
                log.warning("%s; reconnecting from the change needed next", gap)
                wait = 0.0
            except StoreError:
                log.exception("the replica's store failed; the supervisor reopens it")
            finally:
                self.state.set_connected(False)
            stop.wait(wait)
            wait = min(max(wait * 2, self.settings.reconnect_seconds), self.settings.max_reconnect_seconds)

    def _follow(self, stub: rp_grpc.ReplicationStub, stop: threading.Event) -> None:
        position = self.service.store.position()
        acks: queue.SimpleQueue[rp.FollowRequest | None] = queue.SimpleQueue()
        acks.put(rp.FollowRequest(hello=rp.Hello(
            store_id=position.store_id, from_seq=position.seq + 1, epoch=position.epoch,
            last_epoch=position.last_epoch,
        )))
        if position.seq:
            last = self.service.store.changes_since(position.seq - 1, 1)
            if last:
                self.state.known_current_at(last[0].committed_at)

        def requests() -> Iterator[rp.FollowRequest]:
            while (message := acks.get()) is not None:
                yield message

        call = stub.Follow(requests())
        heard = [time.monotonic()]
        done = threading.Event()

        def watchdog() -> None:
            while not done.wait(self.settings.heartbeat_seconds):
                if stop.is_set() or self.service.read_only_for is None or (
                        time.monotonic() - heard[0] > self.settings.silence_seconds):
                    call.cancel()
                    return

        threading.Thread(target=watchdog, name="replica-watchdog", daemon=True).start()
        try:
            for message in call:
                heard[0] = time.monotonic()
                self.state.set_connected(True)
                if message.HasField("change"):
                    pb = message.change
                    change = Change(pb.seq, pb.epoch, pb.kind, pb.payload,
                                    pb.committed.seconds + pb.committed.nanos / 1e9)
                    if self.service.apply(change) is not None:
                        metrics.APPLY_LAG.observe(max(0.0, time.time() - change.committed_at))
                    self.state.known_current_at(change.committed_at)
                    acks.put(rp.FollowRequest(applied_seq=change.seq))
                else:
                    beat = message.heartbeat
                    if self.service.store.last_seq >= beat.primary_seq or (
                            self.service.store.position().seq >= beat.primary_seq):
                        self.state.known_current_at(beat.sent.seconds + beat.sent.nanos / 1e9)
        finally:
            done.set()
            acks.put(None)

    def _take_prefetched(self) -> "Download | None":
        """The snapshot prefetched at start, once; None if there was none or it failed."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is None:
            return None
        try:
            return prefetched.result()
        except (grpc.RpcError, StoreError, OSError) as error:
            log.warning("the snapshot asked for at start did not arrive (%s); asking again", error)
            return None

    def _install(self, stub: rp_grpc.ReplicationStub, diverged: bool) -> None:
        """Download the primary's snapshot beside the store, check it, and put it in place."""
        start = time.perf_counter()
        prefetched = self._take_prefetched()
        received = prefetched or self.download(stub)
        target = self.service.store_path
        aside = target.with_name(f"{target.name}.diverged-{int(time.time())}") if diverged else None
        self.service.install_store(received.store, aside, received.index, received.preloaded)
        log.info("snapshot of %d bytes at change %d (epoch %d) from %s installed in %.2f s (%s%s), %s%s",
                 received.size, received.trailer.seq, received.trailer.epoch, self.primary,
                 time.perf_counter() - start, "asked for while the models loaded; " if prefetched else "",
                 ", ".join(f"{k} at {v:.2f} s" for k, v in received.marks.items()),
                 f"with the primary's index ({received.trailer.index_size} bytes)" if received.index
                 else "without an index", f"; the diverged store is kept as {aside}" if aside else "")
        self.service.recover_now()

@dataclass(frozen=True)
class Download:
    """A snapshot received from the primary, not yet installed."""

    store: Path
    index: Path | None
    size: int
    trailer: rp.SnapshotTrailer
    # The index file loading (or loaded) while the store arrived.
    preloaded: "Future[Any] | None" = None
    # Seconds from the request until the index had arrived, all had arrived, and the store was on disk.
    marks: dict[str, float] = field(default_factory=dict)


def _preload(load: IndexLoader, path: Path) -> "Future[Any]":
    """Load the index file at ``path`` on a thread of its own."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica-index-preload")
    try:
        return pool.submit(load, path)
    finally:
        pool.shutdown(wait=False)


def _discard(preloaded: "Future[Any] | None", *paths: Path | None) -> None:
    """Remove received files that will not be installed, once nothing reads them."""
    if preloaded is not None:
        preloaded.exception()
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)


@contextmanager
def _optional_file(path: Path | None) -> Iterator[BinaryIO | None]:
    """The file at ``path`` opened to write (owner-only), or None when there is no path."""
    if path is None:
        yield None
        return
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb") as out:
        yield out
