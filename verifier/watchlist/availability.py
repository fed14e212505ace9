"""Failing closed: the watch-list service's state, and the half of
:class:`~verifier.watchlist.service.WatchlistService` that keeps it.

The service has a state (:class:`Availability`). A store that
is missing (STORE_MISSING) or fails underneath a call (STORE_UNAVAILABLE: disk
full, read-only, corrupt) puts it out of service with that reason: every call
is refused with it, never answered "no hit" from a half-working store (a
watch-list on a Milvus server that fails, INDEX_UNAVAILABLE, likewise), and
:meth:`WatchlistService.supervise` keeps trying to reopen the store and
rebuild the index until it works again. While serving, the supervisor also
checks every ``store_watch_seconds`` that the store is still the file it
opened (see :meth:`WatchlistStore.check_identity`): a store removed, moved or
replaced under the server is STORE_MISSING, and the index in memory, built
from a store that no longer exists, is not searched. Nothing here touches 1:1 verification.
Templates stored on disk that fail the template checks are quarantined at load
(left out of the index, logged and counted) while the rest of the list serves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from verifier.config import WatchlistSettings
from verifier.errors import Reason, VerifierError
from verifier.watchlist import metrics
from verifier.watchlist.index import WatchlistIndex
from verifier.storage.faults import StoreError, StoreMissing
from verifier.watchlist.store import WatchlistStore

# One logger for the watch-list service, whichever of its halves logs.
log = logging.getLogger("verifier.watchlist.service")


class State(Enum):
    LOADING = "loading"
    SERVING = "serving"
    OUT_OF_SERVICE = "out_of_service"


@dataclass(frozen=True)
class Availability:
    """Whether the watch-lists can be served, and if not, why (a reason a caller
    and an operator can act on)."""

    state: State
    reason: Reason | None = None
    message: str = ""

    @property
    def serving(self) -> bool:
        return self.state is State.SERVING


LOADING = Availability(State.LOADING, Reason.INDEX_NOT_READY, "the watch-list index is loading; try again shortly")


class FailClosed:
    """Availability and its supervisor, mixed into WatchlistService (whose
    ``__init__`` sets these attributes and whose ``load`` builds the index)."""

    settings: WatchlistSettings
    store_path: Path
    _store: WatchlistStore | None
    _index: WatchlistIndex | None
    _writes: threading.Lock
    _recovering: threading.Lock
    _closed: bool
    _availability: Availability
    _served_id: str | None
    _listeners: list[Callable[[Availability], None]]

    @property
    def availability(self) -> Availability:
        return self._availability

    def on_availability(self, listener: Callable[[Availability], None]) -> None:
        """Call ``listener`` with every change of availability (the server's health)."""
        self._listeners.append(listener)

    def _set_availability(self, availability: Availability) -> None:
        changed = availability != self._availability
        self._availability = availability
        if changed:
            log_at = logging.INFO if availability.serving else logging.ERROR
            log.log(log_at, "watch-lists %s%s", availability.state.value,
                    f" ({availability.reason.value}: {availability.message})" if availability.reason else "")
            metrics.set_availability(availability.state.value, availability.reason.value if availability.reason else "")
            for listener in self._listeners:
                listener(availability)

    def _refusal(self) -> VerifierError:
        current = self._availability
        reason = current.reason or Reason.INDEX_NOT_READY
        return VerifierError(reason, current.message or "the watch-lists are not available", store=str(self.store_path))

    def _fail(self, error: StoreError) -> VerifierError:
        """Take the watch-lists out of service for a store fault; the error to answer with."""
        reason = Reason.STORE_MISSING if isinstance(error, StoreMissing) else Reason.STORE_UNAVAILABLE
        self._set_availability(Availability(State.OUT_OF_SERVICE, reason, str(error)))
        return self._refusal()

    @contextmanager
    def _store_faults(self, lists: bool = True) -> Iterator[None]:
        """Any store fault inside the block, or (with ``lists``) a watch-list on a
        vector server that fails (INDEX_UNAVAILABLE: Milvus down, slow or
        refusing), takes the service out of service and is answered with its
        reason; never half an answer. The supervisor loads the lists again (from
        the store) until it works."""
        try:
            yield
        except StoreError as error:
            raise self._fail(error) from error
        except VerifierError as error:
            if lists and error.reason is Reason.INDEX_UNAVAILABLE:
                self._set_availability(Availability(State.OUT_OF_SERVICE, Reason.INDEX_UNAVAILABLE, error.message))
            raise

    def store_faults(self) -> AbstractContextManager[None]:
        """Store faults only, for another service keeping its tables in this store
        (the registry): its own index's faults are its own, not the watch-lists'."""
        return self._store_faults(lists=False)

    def serving_store(self) -> WatchlistStore:
        """The store, refused with the reason while it is out of service (for the registry)."""
        return self._open_store()

    def _open_store(self) -> WatchlistStore:
        """The store, for calls that need only it (they work while the index loads)."""
        if self._store is None or self._closed or self._availability.state is State.OUT_OF_SERVICE:
            raise self._refusal()
        return self._store

    def _ready_index(self) -> WatchlistIndex:
        if self._index is None or self._closed or not self._availability.serving:
            raise self._refusal()
        return self._index

    def supervise(self, stop: threading.Event) -> None:
        """Bring the watch-lists into service and keep them there: open the store and
        load the index, and whenever that fails or a store fault takes the service
        out, try again every ``store_retry_seconds`` until ``stop`` is set."""
        retry_at = 0.0
        while not stop.is_set():
            try:
                if self._availability.serving:
                    self._watch()
                elif not self._closed and time.monotonic() >= retry_at:
                    retry_at = time.monotonic() + self.settings.store_retry_seconds
                    self._recover()
            except Exception:  # noqa: BLE001 - the supervisor must outlive any fault it meets
                log.exception("watch-list supervisor: unexpected failure; trying again")
            stop.wait(min(self.settings.store_watch_seconds, self.settings.store_retry_seconds))

    def _watch(self) -> None:
        """Take the watch-lists out of service if the store is no longer the file
        it opened (STORE_MISSING) or cannot be read afresh (STORE_UNAVAILABLE)."""
        store = self._store
        if store is None:
            return
        try:
            store.check_identity(deep=True)
        except StoreError as error:
            with self._writes:
                if self._store is store and self._availability.serving and not self._closed:
                    self._fail(error)

    def _recover(self) -> None:
        # The supervisor and a replica's follower may both find the service
        # loading; whichever comes second waits, finds it serving and leaves it
        # so (reopening would take the loaded index away and load it again).
        with self._recovering:
            if not self._availability.serving:
                self._reopen_and_load()

    def _reopen_and_load(self) -> None:
        with self._writes:
            if self._closed:
                return
            if self._store is not None:
                self._store.close()
                self._store = None
            self._index = None
            try:
                store = WatchlistStore.open(self.store_path, self.settings.busy_timeout_seconds)
                self._store = store
                store.check_writable()
                if self._served_id is not None and store.store_id != self._served_id:
                    raise StoreMissing(
                        f"{self.store_path} is another store (id {store.store_id}) than the one this server served "
                        f"(id {self._served_id}): it is not taken up while serving; restart the server to serve it"
                    )
            except StoreError as error:
                if isinstance(error, StoreMissing) and self._store is not None:
                    self._store.close()
                    self._store = None
                self._fail(error)
                return
        try:
            self.load()
        except VerifierError:
            return  # load has set the reason
        except Exception as error:  # noqa: BLE001 - an index that cannot be built is a store fault too
            log.exception("the watch-list index could not be built")
            self._set_availability(Availability(State.OUT_OF_SERVICE, Reason.STORE_UNAVAILABLE, str(error)))

    def recover_now(self) -> None:
        """Open the store and load the index at once (a replica that has just
        installed its snapshot), rather than at the supervisor's next round."""
        if not self._availability.serving and not self._closed:
            self._recover()
