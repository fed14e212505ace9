"""What replication needs of the service whose store it replicates.

Replication knows the storage layer (the database, its change feed and
pinned snapshots: :mod:`verifier.storage`) and nothing of what the store
holds. The service above the store (the watch-list service, which the
registry shares its store with) is this port: it commits and applies
changes under its own lock, keeps the index derived from the store, and
captures that index at a snapshot's change. The composition root
(:mod:`verifier.app`) hands it to the feed and the follower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from verifier.storage.database import Database, PinnedStore
from verifier.storage.feed import Change


class IndexImage(Protocol):
    """A search index captured at a snapshot's change, as the bytes of its saved file."""

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, a piece at a time."""
        ...


# Loads an index file a replica received (on a thread of its own, while the
# store arrives); what it loads goes back to the service with the store.
IndexLoader = Callable[[Path], Any]


class ReplicatedService(Protocol):
    """Either end of the feed: a primary's commits are heard and its store
    pinned for snapshots; a replica applies the primary's changes and installs
    its snapshot."""

    store_path: Path
    # Where the service's saved index lives (None: it keeps none).
    snapshot: Path | None
    # The primary's address while this server is a read-only replica.
    read_only_for: str | None
    # Synchronous mode: called with each committed change before it is answered.
    confirmation: Callable[[int], None] | None

    @property
    def store(self) -> Database: ...

    @property
    def ready(self) -> bool: ...

    def on_commit(self, listener: Callable[[int], None]) -> None: ...

    def apply(self, change: Change) -> object | None: ...

    def recover_now(self) -> None: ...

    def pinned_snapshot(self) -> AbstractContextManager[tuple[PinnedStore, IndexImage | None]]: ...

    def install_store(self, incoming: Path, aside: Path | None, incoming_index: Path | None = None,
                      preloaded: Future[Any] | None = None) -> None: ...

    def load_index_file(self, path: Path) -> Any: ...
