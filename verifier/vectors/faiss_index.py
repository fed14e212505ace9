"""FAISS behind :class:`verifier.vectors.base.VectorIndex`: exact, or IVF.

Exact (``IndexIDMap2`` over ``IndexFlatIP``) scores every vector: about a
second per search at 10 million 192-D templates on one core. IVF
(``IndexIVFFlat``, inner product) clusters the vectors around ``nlist``
centroids and scores only the vectors of the ``nprobe`` clusters nearest the
query. Its codes are the vectors themselves, so every candidate it returns is
scored exactly (the re-ranking from stored vectors is built in): the only
approximation is which clusters are looked in. Product quantisation was the
alternative: it saves memory (48 bytes a vector instead of 768) but its
scores are approximate, so a short list must be re-ranked from float vectors
kept elsewhere, and at 10 million 192-D vectors the float vectors fit in 7.7
GB, inside the 12 GB budget, anyway (README: registry benchmark). HNSW was
ruled out: FAISS cannot remove from it, and erasure must remove.

IVF is trained: below ``min_train`` vectors the index is exact, and it is
rebuilt (trained again on a sample, every vector added again) in a background
thread when the collection has grown ``retrain_growth`` times since it was
last trained. Searches go on against the old index meanwhile; adds and
removes made during the rebuild are applied to the new one before it takes
over, under the write lock.

A snapshot is one file: the FAISS index, then a trailer with the tag and a
SHA-256 of the index bytes; anything that does not match is not loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np

from verifier.vectors.base import IndexTag, unit_rows
from verifier.vectors.locks import ReadWriteLock

log = logging.getLogger(__name__)

SNAPSHOT_FILE_MODE = 0o600
_MAGIC = b"VREGIDX1"
_TRAILER = struct.Struct("<Q8s")

# A source of every (ids, vectors) the index should hold, in chunks: the store.
Source = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


def _exact(dimension: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


# Training vectors per list, at least (k-means needs many points per centroid to place it well).
TRAIN_PER_LIST = 64


def _nlist_for(count: int) -> int:
    """About 4 sqrt(n) clusters (FAISS's guidance for millions of vectors), a power of two."""
    return max(64, 1 << round(math.log2(4 * math.sqrt(max(count, 1)))))


def training_size(nlist: int, train_sample: int) -> int:
    """Vectors to train ``nlist`` lists on: at least ``train_sample``, and at
    least :data:`TRAIN_PER_LIST` per list (FAISS warns below 39; at 10 million
    templates a fixed 262,144 left 16 a list)."""
    return max(train_sample, TRAIN_PER_LIST * nlist)


def build_ivf(dimension: int, ids: np.ndarray, vectors: np.ndarray, nlist: int, nprobe: int,
              train_sample: int, seed: int = 0) -> faiss.Index:
    """An IVF-Flat index trained on a sample of ``vectors`` (see :func:`training_size`) and holding all of them."""
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFFlat(quantizer, dimension, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    wanted = training_size(nlist, train_sample)
    sample = vectors if len(vectors) <= wanted else vectors[rng.choice(len(vectors), wanted, replace=False)]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.nprobe = nprobe
    for start in range(0, len(ids), 262_144):
        index.add_with_ids(np.ascontiguousarray(vectors[start:start + 262_144], dtype=np.float32),
                           np.ascontiguousarray(ids[start:start + 262_144], dtype=np.int64))
    return index


class FaissIndex:
    """Exact, or IVF once large enough (``approximate``), with background rebuilds."""

    def __init__(self, dimension: int, approximate: bool = False, nprobe: int = 64, min_train: int = 50_000,
                 retrain_growth: float = 4.0, train_sample: int = 262_144, source: Source | None = None) -> None:
        self.dimension = dimension
        self.approximate = approximate
        self.nprobe = nprobe
        self.min_train = min_train
        self.retrain_growth = retrain_growth
        self.train_sample = train_sample
        self.source = source
        self._lock = ReadWriteLock()
        self._index: faiss.Index = _exact(dimension)
        self._trained_at = 0
        self._rebuilding: threading.Thread | None = None
        # Changes made while a rebuild runs: replayed onto the new index before it serves.
        self._pending: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self._index, faiss.IndexIVF) else "exact"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        keys = np.ascontiguousarray(ids, dtype=np.int64)
        rows = unit_rows(vectors, self.dimension)
        with self._lock.writing():
            self._index.add_with_ids(rows, keys)
            if self._pending is not None:
                self._pending.append(("add", keys, rows))
        self._maybe_rebuild()

    def remove(self, ids: np.ndarray) -> None:
        keys = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock.writing():
            self._index.remove_ids(keys)
            if self._pending is not None:
                self._pending.append(("remove", keys, None))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vector = unit_rows(query, self.dimension)[:1]
        with self._lock.reading():
            if self._index.ntotal == 0:
                return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
            scores, keys = self._index.search(vector, min(k, self._index.ntotal))
        found = keys[0] >= 0
        return scores[0][found], keys[0][found]

    def size(self) -> int:
        with self._lock.reading():
            return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        with self._lock.reading():
            return np.sort(_ids_of(self._index))

    def close(self) -> None:
        thread = self._rebuilding
        if thread is not None:
            thread.join()

    # --- training -------------------------------------------------------------------------------------------

    def _due(self) -> bool:
        count = self._index.ntotal
        if not self.approximate or self.source is None or count < self.min_train:
            return False
        return self._trained_at == 0 or count >= self.retrain_growth * self._trained_at

    def _maybe_rebuild(self) -> None:
        with self._lock.reading():
            due = self._due() and self._rebuilding is None
        if due:
            self.rebuild(background=True)

    def rebuild(self, background: bool = False) -> None:
        """Train and fill a new IVF index from the source, and let it take over."""
        if self.source is None:
            raise ValueError("an index without a source cannot be rebuilt")
        with self._lock.writing():
            if self._rebuilding is not None:
                return
            self._pending = []
            self._rebuilding = threading.Thread(target=self._rebuild, name="registry-index-rebuild", daemon=True)
        if background:
            self._rebuilding.start()
        else:
            self._rebuilding.start()
            self._rebuilding.join()

    def wait(self) -> None:
        """Until a running rebuild has finished (tests, the bulk loader, the benchmark)."""
        thread = self._rebuilding
        if thread is not None:
            thread.join()

    def _rebuild(self) -> None:
        try:
            chunks = list(self.source())  # type: ignore[misc]
            ids = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, dtype=np.int64)
            vectors = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0, self.dimension), np.float32)
            del chunks
            if len(ids) < self.min_train:
                fresh = _exact(self.dimension)
                fresh.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
            else:
                fresh = build_ivf(self.dimension, ids, vectors, _nlist_for(len(ids)), self.nprobe, self.train_sample)
            del vectors
            with self._lock.writing():
                for action, keys, rows in self._pending or ():
                    if action == "add":
                        fresh.remove_ids(keys)  # present already if the source read it after the add
                        fresh.add_with_ids(rows, keys)
                    else:
                        fresh.remove_ids(keys)
                self._index = fresh
                self._trained_at = int(fresh.ntotal)
            log.info("registry index rebuilt: %s, %d vectors", self.kind, self._trained_at)
        except Exception:  # noqa: BLE001 - the old index serves on; logged for the operator
            log.exception("registry index rebuild failed; the previous index serves on")
        finally:
            with self._lock.writing():
                self._pending = None
                self._rebuilding = None

    # --- snapshots ------------------------------------------------------------------------------------------

    def write(self, write: Callable[[bytes], int]) -> None:
        """The FAISS index's bytes, through ``write`` a piece at a time (1 MB at
        most): how a file holding several indexes (a watch-list snapshot, one
        index per list) takes this one's part."""
        with self._lock.reading():
            faiss.write_index(self._index, faiss.PyCallbackIOWriter(write))

    @classmethod
    def read(cls, read: Callable[[int], bytes], dimension: int) -> "FaissIndex | None":
        """An exact index of ``dimension`` from the bytes :meth:`write` wrote,
        taken through ``read``; None when they are another kind of index or of
        another dimension (a FAISS error reading them is raised)."""
        loaded = faiss.read_index(faiss.PyCallbackIOReader(read))
        if not isinstance(loaded, faiss.IndexIDMap2) or loaded.d != dimension:
            return None
        index = cls(dimension)
        index._index = loaded
        return index

    def save(self, path: Path, tag: IndexTag) -> None:
        """Write the index atomically (temporary file, fsync, rename)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        digest = hashlib.sha256()
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SNAPSHOT_FILE_MODE)
        os.fchmod(descriptor, SNAPSHOT_FILE_MODE)
        with self._lock.reading(), os.fdopen(descriptor, "wb") as out:

            def write(chunk: bytes) -> int:
                digest.update(chunk)
                return out.write(chunk)

            out.write(_MAGIC)
            faiss.write_index(self._index, faiss.PyCallbackIOWriter(write))
            trailer = json.dumps({"tag": tag.as_dict(), "trained_at": self._trained_at,
                                  "sha256": digest.hexdigest()}).encode()
            out.write(trailer)
            out.write(_TRAILER.pack(len(trailer), _MAGIC))
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)

    def load(self, path: Path, expected: IndexTag) -> bool:
        """Take the saved index if it is intact and was built from exactly ``expected``."""
        digest = hashlib.sha256()
        try:
            with path.open("rb") as source:
                source.seek(0, os.SEEK_END)
                end = source.tell()
                source.seek(end - _TRAILER.size)
                length, magic = _TRAILER.unpack(source.read(_TRAILER.size))
                if magic != _MAGIC or length > end:
                    return False
                source.seek(end - _TRAILER.size - length)
                header = json.loads(source.read(length))
                if IndexTag(**header["tag"]) != expected:
                    return False
                source.seek(0)
                if source.read(len(_MAGIC)) != _MAGIC:
                    return False

                def read(size: int) -> bytes:
                    chunk = source.read(size)
                    digest.update(chunk)
                    return chunk

                loaded = faiss.read_index(faiss.PyCallbackIOReader(read))
        except (OSError, RuntimeError, ValueError, KeyError, TypeError, struct.error):
            return False
        if digest.hexdigest() != header["sha256"] or loaded.d != self.dimension:
            return False
        if isinstance(loaded, faiss.IndexIVF):
            loaded.nprobe = self.nprobe
        with self._lock.writing():
            self._index = loaded
            self._trained_at = int(header["trained_at"])
        return True


def _ids_of(index: faiss.Index) -> np.ndarray:
    if isinstance(index, faiss.IndexIDMap2):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    invlists = index.invlists
    found = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
             for i in range(index.nlist) if invlists.list_size(i)]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)
