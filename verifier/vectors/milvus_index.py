"""Milvus behind :class:`verifier.vectors.base.VectorIndex`.

``uri`` is a Milvus standalone or cluster address (``http://host:19530``) in
production, or a local file path, which runs embedded Milvus Lite: for tests
and a single development machine, not for speed (README: registry). The
collection is derived from the store: it is dropped and refilled from the
store whenever its count disagrees with the store's (see the registry
service), so nothing is ever trusted to Milvus alone.

Milvus searches only what has been flushed into sealed segments quickly, so
bulk loads end with :meth:`flush`; deletes are visible to searches at once
(strong consistency is asked for every search, so a search never misses an
insert acknowledged before it).
"""

from __future__ import annotations

import threading

import numpy as np

from verifier.vectors.base import unit_rows

_ID, _VECTOR = "id", "vector"
# Rows per insert call: Milvus refuses requests above 64 MB (at 192-D, about 80,000 rows).
_BATCH = 20_000


class MilvusIndex:
    def __init__(self, uri: str, collection: str, dimension: int, index_type: str = "FLAT",
                 token: str = "", search_params: dict | None = None) -> None:
        from pymilvus import DataType, MilvusClient

        self.dimension = dimension
        self.collection = collection
        self.search_params = {"metric_type": "IP", "params": dict(search_params or {})}
        self.index_type = index_type
        self._types = DataType
        self._client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
        self._lock = threading.Lock()
        self._ensure()

    def _ensure(self) -> None:
        if not self._client.has_collection(self.collection):
            schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(_ID, self._types.INT64, is_primary=True)
            schema.add_field(_VECTOR, self._types.FLOAT_VECTOR, dim=self.dimension)
            params = self._client.prepare_index_params()
            params.add_index(_VECTOR, index_type=self.index_type, metric_type="IP")
            self._client.create_collection(self.collection, schema=schema, index_params=params,
                                           consistency_level="Strong")
        self._client.load_collection(self.collection)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        rows = unit_rows(vectors, self.dimension)
        keys = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(keys), _BATCH):
            self._client.insert(self.collection, [
                {_ID: int(key), _VECTOR: row.tolist()}
                for key, row in zip(keys[start:start + _BATCH], rows[start:start + _BATCH])
            ])

    def remove(self, ids: np.ndarray) -> None:
        keys = [int(key) for key in np.asarray(ids, dtype=np.int64)]
        if keys:
            self._client.delete(self.collection, ids=keys)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vector = unit_rows(query, self.dimension)[0].tolist()
        found = self._client.search(self.collection, data=[vector], limit=max(1, k),
                                    search_params=self.search_params, consistency_level="Strong")[0]
        return (np.array([hit["distance"] for hit in found], dtype=np.float32),
                np.array([hit["id"] for hit in found], dtype=np.int64))

    def size(self) -> int:
        result = self._client.query(self.collection, filter="", output_fields=["count(*)"],
                                    consistency_level="Strong")
        return int(result[0]["count(*)"])

    def ids(self) -> np.ndarray:
        found: list[int] = []
        iterator = self._client.query_iterator(self.collection, batch_size=10_000, filter="",
                                               output_fields=[_ID], consistency_level="Strong")
        while True:
            batch = iterator.next()
            if not batch:
                iterator.close()
                break
            found.extend(int(row[_ID]) for row in batch)
        return np.sort(np.array(found, dtype=np.int64))

    def flush(self) -> None:
        """Seal what was inserted: searches after a bulk load are then fast."""
        self._client.flush(self.collection)

    def clear(self) -> None:
        """Drop every vector (the collection is rebuilt from the store)."""
        with self._lock:
            self._client.drop_collection(self.collection)
            self._ensure()

    def close(self) -> None:
        self._client.close()
