"""The watch-list service as one end of the change feed: the half of
:class:`~verifier.watchlist.service.WatchlistService` that replication calls.

On a replica (``read_only_for`` names its primary) every write
is refused with READ_ONLY_REPLICA, and changes arrive from the primary's feed
through :meth:`WatchlistService.apply`, which updates store and index under
the same lock as a local write. On a primary, listeners registered with
:meth:`WatchlistService.on_commit` hear of each committed change after the
lock is released (the feed wakes its followers; in synchronous mode the write
then waits for a replica's acknowledgement before it is answered).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from verifier.errors import Reason, VerifierError
from verifier.templates import Template
from verifier.watchlist.availability import LOADING
from verifier.watchlist.index import LoadedIndex, SerializedIndex, SnapshotTag, WatchlistIndex
from verifier.storage.database import PinnedStore
from verifier.storage.feed import Change
from verifier.watchlist.store import Applied, WatchlistStore


class Replicated:
    """Commit listeners and synchronous confirmation on a primary; refusing
    writes, applying the primary's changes and installing its snapshot on a
    replica. Mixed into WatchlistService (whose ``__init__`` sets these
    attributes; store, index, write lock and availability are its own)."""

    store_path: Path
    snapshot: Path | None
    _store: WatchlistStore | None
    _index: WatchlistIndex | None
    _writes: threading.Lock
    _served_id: str | None
    _preloaded: Future[LoadedIndex | None] | None
    _commit_listeners: list[Callable[[int], None]]
    _applied_listeners: list[Callable[[Applied], None]]
    confirmation: Callable[[int], None] | None
    read_only_for: str | None

    def on_commit(self, listener: Callable[[int], None]) -> None:
        """Call ``listener`` with the sequence number of each change committed
        here, after it is durable and in the index, before it is answered."""
        self._commit_listeners.append(listener)

    def on_applied(self, listener: Callable[[Applied], None]) -> None:
        """Call ``listener`` with each change applied from the primary's feed,
        under the write lock (the registry's index follows its travellers)."""
        self._applied_listeners.append(listener)

    def announce(self, seq: int) -> None:
        """Tell the feed (and synchronous mode) of a change another store
        sharing this file (the registry) committed."""
        self._committed(seq)

    def _committed(self, seq: int, confirm: bool = True) -> None:
        for listener in self._commit_listeners:
            listener(seq)
        if confirm and self.confirmation is not None:
            self.confirmation(seq)

    @staticmethod
    def load_index_file(path: Path) -> LoadedIndex | None:
        """An index file a replica received with the primary's snapshot, loaded
        whatever store it names (:meth:`WatchlistIndex.load_any`): what
        :meth:`install_store` takes, as ``preloaded``, with that store."""
        return WatchlistIndex.load_any(path)

    def require_writable(self) -> None:
        """Refuse a write on a replica, naming the primary to send it to."""
        if self.read_only_for is not None:
            raise VerifierError(
                Reason.READ_ONLY_REPLICA,
                f"this server is a read-only replica; send changes to the primary at {self.read_only_for}",
                primary=self.read_only_for,
            )

    def _index_subject(
        self, index: WatchlistIndex, row: int, watchlist: str, templates: list[Template], expires_at: float | None
    ) -> None:
        served = [t.vector for t in templates if t.model_id == self.model_id]
        if served:
            index.add_subject(watchlist, row, np.stack(served), expires_at)

    def apply(self, change: Change) -> Applied | None:
        """Apply a change from the primary's feed to store and index (a replica's
        only way to change); None when it was applied before."""
        with self._writes, self._store_faults():
            index = self._ready_index()
            applied = self.store.apply_change(change)
            if applied is None:
                return None
            for name in applied.dropped:
                index.drop_watchlist(name)
            for row, name, count in applied.removed:
                index.remove_subject(name, row, count)
            for name in applied.created:
                index.add_watchlist(name)
            for row, name, templates, expires_at in applied.added:
                self._index_subject(index, row, name, templates, expires_at)
            for listener in self._applied_listeners:
                listener(applied)
        return applied

    def promote(self) -> int:
        """Become the primary: a new epoch on the feed; writes are taken from now on."""
        with self._writes, self._store_faults():
            self._ready_index()
            epoch = self.store.new_epoch()
            seq = self.store.last_seq
            self.read_only_for = None
        self._committed(seq, confirm=False)
        return epoch

    @contextmanager
    def pinned_snapshot(self) -> Iterator[tuple[PinnedStore, SerializedIndex | None]]:
        """The store pinned at one change (a read transaction, for the block) and,
        when the index is loaded, the index captured at exactly that change:
        what a new replica starts from.

        Writes wait only while the index is copied in memory: the store is
        pinned under the write lock, and whatever is read or copied from the
        pin afterwards is at that change, whatever is committed meanwhile.
        """
        with self._store_faults(), ExitStack() as pins:
            with self._writes:
                pinned = pins.enter_context(self.store.pinned(file_image=True))
                index = self._index if self.ready else None
                taken = None if index is None else index.serialized(SnapshotTag(
                    pinned.position.store_id, pinned.position.seq, self.model_id, index.dimension))
            yield pinned, taken

    def install_store(
        self, incoming: Path, aside: Path | None, incoming_index: Path | None = None,
        preloaded: Future[LoadedIndex | None] | None = None,
    ) -> None:
        """Put a store file received from the primary in place of this one (kept
        as ``aside`` when given), and the index saved with it (if any) where a
        saved index is looked for, leaving the service loading until
        :meth:`recover_now` opens them. The index is not trusted for coming
        with the store: :meth:`load` uses it (or ``preloaded``, the same file
        loaded while the store arrived) only if its tag and digest match the
        installed store, and rebuilds otherwise."""
        with self._writes:
            self._preloaded = preloaded
            self._served_id = None  # the primary's store, put in place on purpose
            if self._store is not None:
                self._store.close()
                self._store = None
            self._index = None
            self._set_availability(LOADING)
            for suffix in ("", "-wal", "-shm"):
                current = Path(f"{self.store_path}{suffix}")
                if current.exists():
                    if aside is not None:
                        os.replace(current, Path(f"{aside}{suffix}"))
                    else:
                        current.unlink()
            os.replace(incoming, self.store_path)
            if self.snapshot is not None:
                if incoming_index is not None:
                    os.replace(incoming_index, self.snapshot)
                else:
                    self.snapshot.unlink(missing_ok=True)
            directory = os.open(self.store_path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
