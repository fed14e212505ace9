"""The primary's side of the change feed: who is behind, what to send them next,
and (synchronous mode) waiting for a replica to hold a change.

A follower says where it stands (store id, next change wanted, the epoch it
has seen and the epoch of its last change). It is served only if its history
is a prefix of this store's: same store id, its last change here with the same
epoch. Otherwise it diverged (an old primary with writes no one received) and
must load a snapshot. A follower that has seen a newer epoch than this store
proves this server was replaced by a promotion: the store is fenced (no more
writes) and the follower refused.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from verifier.config import ReplicationSettings
from verifier.errors import Reason, VerifierError
from verifier.replication.replicated import IndexImage, ReplicatedService
from verifier.storage.feed import Change, FeedPosition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heartbeat:
    """The follower held every change up to ``primary_seq`` when sent at ``sent``."""

    primary_seq: int
    epoch: int
    sent: float


@dataclass(frozen=True)
class StoreImage:
    """Where a consistent image of the store can be read: the first ``size`` bytes of ``path``."""

    path: Path
    size: int


@dataclass(frozen=True)
class Snapshot:
    """What a new replica starts from: the store at ``position`` (its image ready
    once ``store`` is done; a store fault while copying is its exception) and,
    when set, the index captured at the same change."""

    position: FeedPosition
    store: Future[StoreImage]
    index: IndexImage | None = None


class Feed:
    def __init__(self, service: ReplicatedService, settings: ReplicationSettings) -> None:
        self.service = service
        self.settings = settings
        self._changed = threading.Condition()
        self._head = 0
        self._acked = 0
        service.on_commit(self._on_commit)
        if settings.synchronous:
            service.confirmation = self._await_replica

    def _on_commit(self, seq: int) -> None:
        with self._changed:
            self._head = max(self._head, seq)
            self._changed.notify_all()

    def _await_replica(self, seq: int) -> None:
        with self._changed:
            confirmed = self._changed.wait_for(lambda: self._acked >= seq, self.settings.sync_timeout_seconds)
        if not confirmed:
            raise VerifierError(
                Reason.REPLICA_UNCONFIRMED,
                f"change {seq} is committed on the primary but no replica confirmed it within "
                f"{self.settings.sync_timeout_seconds:g} s; check its outcome before sending it again",
                seq=seq,
            )

    def acknowledged(self, seq: int) -> None:
        """A follower holds every change up to ``seq`` durably."""
        with self._changed:
            if seq > self._acked:
                self._acked = seq
                self._changed.notify_all()

    def admit(self, store_id: str, from_seq: int, epoch: int, last_epoch: int) -> FeedPosition:
        """Check a follower's standing; refuses with REPLICA_DIVERGED or STALE_EPOCH."""
        store = self.service.store
        here = store.position()
        if epoch > here.epoch:
            store.fence(epoch)
            log.error("a follower has seen epoch %d, newer than this store's %d: this server was replaced by a "
                      "promotion and takes no more writes", epoch, here.epoch)
            raise VerifierError(
                Reason.STALE_EPOCH, f"this server is at epoch {here.epoch}; the follower has seen {epoch}",
                epoch=here.epoch, follower_epoch=epoch,
            )
        previous = from_seq - 1
        ours = store.epoch_at(previous) if previous <= here.seq else None
        if store_id != here.store_id or from_seq < 1 or ours is None or ours != last_epoch:
            raise VerifierError(
                Reason.REPLICA_DIVERGED,
                f"the follower's history (change {previous} of epoch {last_epoch}, store {store_id[:8]}) is not "
                f"this primary's (at {here.seq}, epoch {here.epoch}); load a snapshot",
                primary_seq=here.seq, primary_epoch=here.epoch,
            )
        return here

    def changes(self, after: int, active: Callable[[], bool]) -> Iterator[Change | Heartbeat]:
        """Every change after ``after``, in order, as they are committed, with a
        heartbeat every ``heartbeat_seconds``, while ``active()``."""
        sent = after
        beat = time.monotonic()
        while active():
            batch = self.service.store.changes_since(sent, self.settings.batch)
            for change in batch:
                yield change
                sent = change.seq
            if time.monotonic() - beat >= self.settings.heartbeat_seconds or not batch:
                moment = time.time()
                position = self.service.store.position()
                if position.seq == sent:
                    yield Heartbeat(sent, position.epoch, moment)
                    beat = time.monotonic()
                    with self._changed:
                        self._changed.wait_for(lambda: self._head > sent or not active(),
                                               self.settings.heartbeat_seconds)

    @contextmanager
    def snapshot(self, folder: Path) -> Iterator[Snapshot]:
        """The store and index at one change, held for the block.

        The store image is the database file itself when it holds the pinned
        change (see :meth:`verifier.storage.database.Database.pinned`); otherwise a copy is made in
        ``folder`` on a thread of its own (seconds at a million templates),
        so the index can be sent meanwhile, and removed when the block ends."""
        start = time.perf_counter()
        with self.service.pinned_snapshot() as (pinned, index):
            position = pinned.position
            if pinned.file_bytes is not None:
                ready: Future[StoreImage] = Future()
                ready.set_result(StoreImage(pinned.path, pinned.file_bytes))
                log.info("snapshot at change %d taken in %.2f s, read from the store file itself (%s)", position.seq,
                         time.perf_counter() - start, "with the index" if index is not None else "without an index")
                yield Snapshot(position, ready, index)
                return
            copy = folder / f"snapshot-{uuid.uuid4().hex}.sqlite3"

            def copied() -> StoreImage:
                pinned.copy_to(copy, durable=False)
                log.info("snapshot at change %d copied in %.2f s (%s)", position.seq, time.perf_counter() - start,
                         "with the index" if index is not None else "without an index: the replica builds its own")
                return StoreImage(copy, os.path.getsize(copy))

            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-copy")
            try:
                made = pool.submit(copied)
                try:
                    yield Snapshot(position, made, index)
                finally:
                    # The copy reads through the pin: it ends before the pin does.
                    made.exception()
                    copy.unlink(missing_ok=True)
            finally:
                pool.shutdown(wait=False)
