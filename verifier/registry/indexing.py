"""The registry's duplicate-search index: built from the store, served, and
taken out of service when it fails (mixed into
:class:`verifier.registry.service.RegistryService`).

The store is the source of truth: the index (FAISS exact or IVF, or Milvus:
:mod:`verifier.vectors`) is derived, loaded from a snapshot only when it was
saved at the store's current change, else rebuilt; a Milvus collection is
compared with the store (ids, Strong consistency) at every load and every
``milvus_check_seconds``, and rebuilt from the store when they differ.

Failing closed: an index call that fails or times out (INDEX_UNAVAILABLE)
takes the index out of service before the error is answered, health goes
NOT_SERVING and the availability metric carries the reason; the supervisor
loads it again, every ``milvus_retry_seconds``, once Milvus answers. No call
is served from an index between its fault and that load, so a write that
failed after its store commit (the store ahead of the collection) is
repaired before any search is answered again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from verifier.config import RegistrySettings, Settings
from verifier.errors import Reason, VerifierError
from verifier.registry import metrics
from verifier.registry.store import RegistryStore
from verifier.vectors.base import IndexTag, VectorIndex
from verifier.vectors.faiss_index import FaissIndex
from verifier.watchlist.availability import Availability, State
from verifier.watchlist.store import private_directory

log = logging.getLogger("verifier.registry.service")


def build_index(settings: Settings, dimension: int, source: RegistryStore | None, model_id: str) -> VectorIndex:
    """The configured index, empty (its owner fills it from the store)."""
    config = settings.registry
    if config.index == "milvus":
        from verifier.vectors.milvus_index import MilvusIndex

        uri = config.milvus_address(settings.data_dir)
        if "://" not in uri:
            private_directory(Path(uri).parent)
        build, search = config.milvus_index_params()
        return MilvusIndex(uri, config.milvus_collection, dimension, index_type=config.milvus_index_type,
                           token=config.milvus_token(), index_params=build, search_params=search,
                           timeout_s=config.milvus_timeout_seconds,
                           check_timeout_s=config.milvus_check_timeout_seconds,
                           bulk_timeout_s=config.milvus_bulk_timeout_seconds, ca_file=config.milvus_ca())
    return FaissIndex(
        dimension, approximate=config.index == "faiss_ivf", nprobe=config.ivf_nprobe,
        min_train=config.ivf_min_train, retrain_growth=config.ivf_retrain_growth,
        source=(lambda: source.vectors(model_id, dimension)) if source is not None else None,
    )


class IndexedRegistry:
    """The index half of the registry service: its ``__init__`` sets these attributes."""

    settings: Settings
    config: RegistrySettings
    snapshot: Path | None
    _registry: RegistryStore | None
    _index: VectorIndex | None
    _writes: threading.Lock
    _stale: bool
    _fault: VerifierError | None
    _health: Callable[[], None]
    # Properties of the service: the store served now, the served model and its template size.
    store: RegistryStore
    model_id: str
    dimension: int

    @property
    def ready(self) -> bool:
        return self._index is not None and self._registry is not None and not self._stale

    @property
    def availability(self) -> Availability:
        """Whether the registry serves searches, and if not, why (a reason an operator can act on)."""
        if self.ready:
            return Availability(State.SERVING)
        fault = self._fault
        if fault is not None:
            return Availability(State.OUT_OF_SERVICE, fault.reason, fault.message)
        return Availability(State.LOADING, Reason.INDEX_NOT_READY, "the registry index is loading")

    def _ready_index(self) -> VectorIndex:
        if self._index is None or self._stale:
            fault = self._fault
            if fault is not None:
                raise VerifierError(fault.reason, f"the registry index is out of service: {fault.message}")
            raise VerifierError(Reason.INDEX_NOT_READY, "the registry index is loading; try again shortly")
        return self._index

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The write lock, for a write that searches the index: refused at once while
        the index is out of service or loading (a load holds the lock while it
        talks to Milvus, which may be down), and after a bounded wait for it."""
        self._ready_index()
        wait = self.config.milvus_timeout_seconds + self.config.milvus_check_timeout_seconds
        if not self._writes.acquire(timeout=wait):
            raise VerifierError(Reason.INDEX_NOT_READY, f"the registry index was busy for {wait:g} s; try again")
        try:
            self._ready_index()
            yield
        finally:
            self._writes.release()

    @contextmanager
    def _index_faults(self, index: VectorIndex) -> Iterator[None]:
        """An index that fails (INDEX_UNAVAILABLE) inside the block is taken out of
        service before the error is answered: no later call is served from it
        until the supervisor has loaded it again and checked it against the store."""
        try:
            yield
        except VerifierError as error:
            if error.reason is Reason.INDEX_UNAVAILABLE:
                self._out_of_service(error, index)
            raise

    def _out_of_service(self, fault: VerifierError, index: VectorIndex) -> None:
        """Take ``index`` out of service (not one loaded since it failed)."""
        if self._index is not index:
            return
        self._fault = fault
        failed, self._index = self._index, None
        if failed is not None:
            log.error("registry index out of service (%s): %s", fault.reason.value, fault.message)
            failed.close()
            self._announce()

    def _announce(self) -> None:
        """Health and the availability metric, from the present state."""
        availability = self.availability
        metrics.set_availability(availability.state.value, availability.reason.value if availability.reason else "")
        self._health()

    def _tag(self) -> IndexTag:
        store = self.store.store
        return IndexTag(store.store_id, store.change_seq(), self.model_id, self.dimension)

    def load(self) -> str:
        """Load the index from its snapshot when it matches the store, else rebuild it; returns which."""
        with self._writes:
            registry = self.store
            index = build_index(self.settings, self.dimension, registry, self.model_id)
            source = "store"
            if isinstance(index, FaissIndex) and self.snapshot is not None and index.load(self.snapshot, self._tag()):
                source = "snapshot"
            else:
                expected = sum(len(keys) for keys, _ in registry.vectors(self.model_id, self.dimension))
                if index.size() != expected or (expected and not isinstance(index, FaissIndex)
                                                and not np.array_equal(index.ids(), self._store_ids())):
                    if index.size():
                        log.warning("registry index holds %d templates, the store %d (or other ids): rebuilt "
                                    "from the store", index.size(), expected)
                        index.clear()  # type: ignore[attr-defined]  # Milvus: derived, rebuilt from the store
                    self._fill(index, registry)
                    if not isinstance(index, FaissIndex) and index.size() != expected:
                        raise VerifierError(Reason.INDEX_UNAVAILABLE, f"the refilled Milvus collection holds "
                                            f"{index.size()} templates, the store {expected}")
                else:
                    source = "milvus" if not isinstance(index, FaissIndex) else source
            self._index = index
            self._fault = None
        log.info("registry index (%s) ready from %s: %d templates", self.config.index, source, index.size())
        return source

    def _store_ids(self) -> np.ndarray:
        return np.sort(np.concatenate([keys for keys, _ in self.store.vectors(self.model_id, self.dimension)]
                                      or [np.zeros(0, dtype=np.int64)]))

    def _fill(self, index: VectorIndex, registry: RegistryStore) -> None:
        if isinstance(index, FaissIndex) and index.approximate:
            index.rebuild()
            return
        for keys, vectors in registry.vectors(self.model_id, self.dimension):
            index.add(keys, vectors)
        flush = getattr(index, "flush", None)
        if flush is not None:
            flush()

    def check_collection(self) -> tuple[int, int]:
        """Compare the Milvus collection with the store (Strong: rows written by
        anyone); (missing, extra) template counts. A collection that differs is
        taken out of service (INDEX_UNAVAILABLE) and rebuilt from the store by
        the supervisor's next load. Writes are not held up by a check that
        finds nothing (the reads take seconds at millions, or a timeout when
        Milvus hangs); a difference is read again with writes held, so a write
        in flight between its store commit and its index change is not taken
        for drift."""
        index = self._index
        if index is None:
            return 0, 0
        try:
            with self._index_faults(index):
                missing, extra = self._difference(index)
                if missing or extra:
                    with self._writes:
                        missing, extra = self._difference(index)
                if missing or extra:
                    raise VerifierError(Reason.INDEX_UNAVAILABLE, f"the Milvus collection drifted from the "
                                        f"store: {missing} templates missing, {extra} extra; rebuilding it "
                                        "from the store", missing=str(missing), extra=str(extra))
        except VerifierError as error:
            log.warning("registry collection check: %s", error.message)
            return (int(error.details.get("missing", 0)), int(error.details.get("extra", 0)))
        return 0, 0

    def _difference(self, index: VectorIndex) -> tuple[int, int]:
        """(templates in the store and not the index, in the index and not the store)."""
        held, stored = index.ids(), self._store_ids()
        return len(np.setdiff1d(stored, held)), len(np.setdiff1d(held, stored))

    def _reload(self) -> None:
        """(Re)load the index from the store now serving; retried by the supervisor on failure."""
        try:
            if self._stale:
                self._stale = False
                with self._writes:
                    stale, self._index = self._index, None
                if stale is not None:
                    log.warning("the store went missing: the registry index is built again from the store now served")
                    stale.close()
                self._announce()
            self.load()
            self._announce()
        except VerifierError as error:  # Milvus still down: said once a retry, without a traceback
            log.warning("registry index not loaded (%s: %s); retrying", error.reason.value, error.message)
        except Exception:  # noqa: BLE001 - retried; the registry stays refused meanwhile
            log.exception("registry index not loaded; retrying")
