"""Milvus behind :class:`verifier.vectors.base.VectorIndex`.

``uri`` is a Milvus standalone or cluster address (``http://host:19530``) in
production, or a local file path, which runs embedded Milvus Lite: for tests
and a single development machine, not for speed (README: registry). The
collection is derived from the store: its owner checks it against the store
and refills it from the store whenever they differ (see the registry
service), so nothing is ever trusted to Milvus alone.

Consistency, chosen per operation (measured on a Milvus 2.3.5 standalone
server at 100k: README, registry, "Consistency"):

- **searches: Session.** Only this process writes the collection (the store's
  primary owns it), and Session makes a search wait for exactly this client's
  own last write (pymilvus keeps the newest mutation timestamp per server and
  collection for the whole process, across threads), not for the server's
  next time tick as Strong does: p50 7 ms instead of 200 ms at 100k. A
  vector added, or removed, before a search began is seen by that search.
- **writes confirmed before they return.** :meth:`add` reads the new ids back
  (Session) and raises unless every one is there, so a registration is never
  acknowledged while its vector could still be missed (a few milliseconds).
  :meth:`remove` reads them back until none is left: Milvus 2.3.5 returns no
  timestamp pymilvus can keep for a delete, so a Session search right after
  one still sees the rows (measured: the next Session query found both
  deleted ids; Strong and a Session query a second later did not). Waiting
  here (up to a time tick) is paid by erasures and updates only, and after
  it every Session search sees the delete.
- **checks against the store: Strong.** :meth:`ids` must also see rows this
  process did not write (another writer, a restored backup): it waits for the
  server's newest timestamp. :meth:`size`, which every watch-list search and
  every registration asks for, is read as searches are (Session, ``timeout_s``).

Every call is bounded: searches and writes by ``timeout_s``, the Strong reads
(which wait for the server's next time tick) by ``check_timeout_s``, bulk work
by ``bulk_timeout_s``; any
failure, a timeout included, is raised as :class:`VerifierError`
``INDEX_UNAVAILABLE``, never answered as "nothing found".

Milvus searches only what has been flushed into sealed segments quickly, so
bulk loads end with :meth:`flush`, which also waits for the index built on
the sealed segments.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

import numpy as np

from verifier.errors import Reason, VerifierError
from verifier.vectors.base import unit_rows

log = logging.getLogger(__name__)

_ID, _VECTOR = "id", "vector"
# Rows per insert call: Milvus refuses requests above 64 MB (at 192-D, about 80,000 rows).
_BATCH = 20_000
# Ids per confirming read-back (Milvus limits an expression's length).
_CONFIRM_BATCH = 1_000
# How often remove() reads back a delete not yet visible (Milvus's time tick is 200 ms by default).
_DELETE_POLL_S = 0.02
IndexType = Literal["FLAT", "IVF_FLAT", "HNSW"]
SEARCH, CHECK = "Session", "Strong"
_T = TypeVar("_T")


class MilvusIndex:
    """One collection: int64 primary key ``id``, float vector ``vector``,
    inner product. ``index_type`` and ``index_params`` are used when the
    collection is created (FLAT: exact); ``search_params`` on every search
    (``nprobe`` for IVF_FLAT, ``ef`` for HNSW)."""

    def __init__(self, uri: str, collection: str, dimension: int, index_type: IndexType = "FLAT",
                 token: str = "", search_params: dict[str, int] | None = None,
                 index_params: dict[str, int] | None = None, timeout_s: float = 10.0,
                 check_timeout_s: float = 10.0, bulk_timeout_s: float = 600.0, ca_file: str = "") -> None:
        from pymilvus import DataType, MilvusClient

        if index_type not in ("FLAT", "IVF_FLAT", "HNSW"):
            raise ValueError(f"Milvus index type {index_type!r}: FLAT, IVF_FLAT or HNSW")
        self.dimension = dimension
        self.collection = collection
        self.uri = uri
        self.index_type = index_type
        self.index_params = dict(index_params or {})
        self.search_params = {"metric_type": "IP", "params": dict(search_params or {})}
        self.timeout_s = timeout_s
        self.check_timeout_s = check_timeout_s
        self.bulk_timeout_s = bulk_timeout_s
        self._types = DataType
        self._lock = threading.Lock()
        # A connection of its own (pymilvus shares one per address otherwise, and a
        # shared one that gave up after a restart is handed to every new client).
        credentials: dict[str, object] = {"token": token} if token else {}
        if ca_file:  # TLS checked against this CA (pymilvus reads it as the channel's root certificates)
            credentials.update(secure=True, server_pem_path=ca_file)
        self._connect = lambda: MilvusClient(uri=uri, timeout=timeout_s, dedicated=True, **credentials)
        # Set by a failed call: the next call connects afresh and loads the collection
        # again (pymilvus gives a connection up once the server was gone, and a
        # restarted server serves a collection only once it is loaded again).
        self._broken = False
        self._client = self._call("connect", self._connect)
        self._ensure()

    def _call(self, what: str, action: Callable[[], _T]) -> _T:
        """``action``, its failure raised as INDEX_UNAVAILABLE (a fault, never an empty answer)."""
        try:
            if self._broken:
                self._reconnect()
            return action()
        except VerifierError:
            raise
        except Exception as error:  # noqa: BLE001 - pymilvus raises its own, grpc's and OSError
            self._broken = True
            raise VerifierError(Reason.INDEX_UNAVAILABLE, f"Milvus {what} failed on collection "
                                f"{self.collection!r}: {type(error).__name__}: {error}",
                                collection=self.collection, operation=what) from error

    def _reconnect(self) -> None:
        with self._lock:
            if not self._broken:
                return  # another thread reconnected meanwhile
            stale, self._client = self._client, self._connect()
            self._close(stale)
            self._load()
            self._broken = False
            log.info("Milvus collection %r: connected again and loaded", self.collection)

    def _ensure(self) -> None:
        self._call("load", self._load)

    def _load(self) -> None:
        """The collection, created (empty, with its index) unless it exists, and loaded for search."""
        if not self._client.has_collection(self.collection, timeout=self.timeout_s):
            schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(_ID, self._types.INT64, is_primary=True)
            schema.add_field(_VECTOR, self._types.FLOAT_VECTOR, dim=self.dimension)
            params = self._client.prepare_index_params()
            params.add_index(_VECTOR, index_type=self.index_type, metric_type="IP", params=self.index_params)
            self._client.create_collection(self.collection, schema=schema, index_params=params,
                                           consistency_level=SEARCH, timeout=self.bulk_timeout_s)
        self._client.load_collection(self.collection, timeout=self.bulk_timeout_s)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert, then read the ids back: returns only once every one is searchable."""
        rows = unit_rows(vectors, self.dimension)
        keys = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(keys), _BATCH):
            batch = [{_ID: int(key), _VECTOR: row.tolist()}
                     for key, row in zip(keys[start:start + _BATCH], rows[start:start + _BATCH])]
            self._call("insert", lambda b=batch: self._client.insert(self.collection, b, timeout=self.timeout_s))
        if len(keys) <= _CONFIRM_BATCH:  # a bulk load is confirmed by its owner's check against the store
            missing = np.setdiff1d(keys, self._visible(keys))
            if len(missing):
                raise VerifierError(Reason.INDEX_UNAVAILABLE, f"Milvus acknowledged an insert whose rows a search "
                                    f"does not see ({len(missing)} of {len(keys)})", collection=self.collection,
                                    operation="insert")

    def remove(self, ids: np.ndarray) -> None:
        """Delete, then wait until a Session search no longer sees any of the ids."""
        keys = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(keys), _CONFIRM_BATCH):
            batch = [int(key) for key in keys[start:start + _CONFIRM_BATCH]]
            self._call("delete", lambda b=batch: self._client.delete(self.collection, ids=b, timeout=self.timeout_s))
        deadline = time.monotonic() + self.timeout_s
        while len(left := self._visible(keys)):
            if time.monotonic() > deadline:
                raise VerifierError(Reason.INDEX_UNAVAILABLE, f"Milvus acknowledged a delete whose rows a search "
                                    f"still sees after {self.timeout_s:g} s ({len(left)} of {len(keys)})",
                                    collection=self.collection, operation="delete")
            time.sleep(_DELETE_POLL_S)

    def _visible(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` a Session search would see now."""
        found: list[int] = []
        for start in range(0, len(keys), _CONFIRM_BATCH):
            batch = [int(key) for key in keys[start:start + _CONFIRM_BATCH]]
            if batch:
                rows = self._call("read-back", lambda b=batch: self._client.query(
                    self.collection, filter=f"{_ID} in {b}", output_fields=[_ID], consistency_level=SEARCH,
                    timeout=self.timeout_s))
                found.extend(int(row[_ID]) for row in rows)
        return np.array(found, dtype=np.int64)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vector = unit_rows(query, self.dimension)[0].tolist()
        found = self._call("search", lambda: self._client.search(
            self.collection, data=[vector], limit=max(1, k), search_params=self.search_params,
            consistency_level=SEARCH, timeout=self.timeout_s))[0]
        return (np.array([hit["distance"] for hit in found], dtype=np.float32),
                np.array([hit["id"] for hit in found], dtype=np.int64))

    def size(self) -> int:
        """Vectors a search sees now: Session, bounded as a search is. Searches ask
        for it (a gallery's size sets their threshold), so it must not wait for
        the server's time tick nor outlast ``timeout_s``; the check against the
        store reads :meth:`ids` with Strong consistency."""
        result = self._call("count", lambda: self._client.query(
            self.collection, filter="", output_fields=["count(*)"], consistency_level=SEARCH,
            timeout=self.timeout_s))
        return int(result[0]["count(*)"])

    def ids(self) -> np.ndarray:
        def read() -> np.ndarray:
            found: list[int] = []
            iterator = self._client.query_iterator(self.collection, batch_size=10_000, filter="",
                                                   output_fields=[_ID], consistency_level=CHECK,
                                                   timeout=self.check_timeout_s)  # each batch's call
            while True:
                batch = iterator.next()
                if not batch:
                    iterator.close()
                    break
                found.extend(int(row[_ID]) for row in batch)
            return np.sort(np.array(found, dtype=np.int64))

        return self._call("list ids", read)

    def flush(self) -> None:
        """Seal what was inserted and wait for its index: searches after a bulk load are then fast."""
        def seal() -> None:
            self._client.flush(self.collection, timeout=self.bulk_timeout_s)
            deadline = time.monotonic() + self.bulk_timeout_s
            while True:
                described = self._client.describe_index(self.collection, _VECTOR, timeout=self.timeout_s)
                if int(described.get("pending_index_rows", 0)) == 0 or time.monotonic() > deadline:
                    return
                time.sleep(0.5)

        self._call("flush", seal)

    def clear(self) -> None:
        """Drop every vector (the collection is rebuilt from the store)."""
        with self._lock:
            self._call("drop", lambda: self._client.drop_collection(self.collection, timeout=self.bulk_timeout_s))
            self._ensure()

    def reindex(self, index_type: IndexType, index_params: dict[str, int], search_params: dict[str, int]) -> None:
        """Build another index over the vectors held (the benchmark's sweep): release,
        drop the index, create the new one, wait for it, load."""
        def rebuild() -> None:
            self._client.release_collection(self.collection, timeout=self.bulk_timeout_s)
            self._client.drop_index(self.collection, _VECTOR, timeout=self.bulk_timeout_s)
            params = self._client.prepare_index_params()
            params.add_index(_VECTOR, index_type=index_type, metric_type="IP", params=index_params)
            self._client.create_index(self.collection, params, timeout=self.bulk_timeout_s, sync=True)
            self._client.load_collection(self.collection, timeout=self.bulk_timeout_s)

        self._call("reindex", rebuild)
        self.index_type, self.index_params = index_type, dict(index_params)
        self.set_search_params(search_params)

    def set_search_params(self, search_params: dict[str, int]) -> None:
        self.search_params = {"metric_type": "IP", "params": dict(search_params)}

    def close(self) -> None:
        self._close(self._client)

    @staticmethod
    def _close(client: object) -> None:
        try:
            client.close()  # type: ignore[attr-defined]
        except Exception as error:  # noqa: BLE001 - closing a connection to a server that is gone
            log.debug("Milvus connection closed with %s", error)
