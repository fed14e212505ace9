"""The search index: derived from the store, one exact vector index per watch-list.

Each watch-list's templates are one :class:`~verifier.vectors.base.VectorIndex`
of the vector layer (:mod:`verifier.vectors`), the one the registry uses: by
default an exact FAISS index (``IndexIDMap2`` over ``IndexFlatIP``), or a
Milvus collection of its own (``watchlist.index``: :func:`milvus_lists`).
Inner product of unit vectors is their cosine, the search is exact, and the
ids are ours, so a subject's templates can be removed again. A template's id
is its subject's store row shifted left by :data:`TEMPLATE_BITS` plus its
position, so a search hit names its subject without a lookup table, and rows
are never reused.

Concurrency: a readers-writer lock (:mod:`verifier.vectors.locks`). Searches
share it; adding or removing a subject (all its templates in one call) takes
it alone. A search thus sees all or none of a subject's templates, and FAISS
(which releases the GIL) runs several searches at once. Copy-on-write was the
alternative; it would copy the whole gallery on every enrolment, which at a
million templates is 768 MB.

A snapshot (of FAISS lists only) is one file: the FAISS index of each watch-list, then a trailer
with the tag (store id, change sequence, model, dimension), each list's size,
the ids of the stored templates the index was built without (they failed the
template checks: see :attr:`WatchlistIndex.left_out`) and a SHA-256 of the
indexes and those ids; anything that does not match is not loaded.

Expired subjects stay in the index until swept (see :meth:`WatchlistIndex.sweep`)
but are skipped by every search, so they are never returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np

from verifier.store_config import MilvusClientSettings, WatchlistSettings
from verifier.security.files import write_private
from verifier.vectors.base import VectorIndex
from verifier.vectors.faiss_index import FaissIndex
from verifier.vectors.locks import ReadWriteLock
from verifier.storage.database import private_directory

TEMPLATE_BITS = 8
# Snapshots hold every template: readable by the service's own user only.
SNAPSHOT_FILE_MODE = 0o600
_SNAPSHOT_MAGIC = b"VWLIDX01"
_TRAILER = struct.Struct("<Q8s")


def template_ids(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The index ids of templates, from their subjects' store rows and their positions."""
    return (rows.astype(np.int64) << TEMPLATE_BITS) + positions.astype(np.int64)


def template_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The subjects' store rows and the positions of index ids (the inverse of :func:`template_ids`)."""
    keys = np.asarray(keys, dtype=np.int64)
    return keys >> TEMPLATE_BITS, keys & ((1 << TEMPLATE_BITS) - 1)


def _subject_ids(row: int, count: int) -> np.ndarray:
    return template_ids(np.full(count, row, dtype=np.int64), np.arange(count, dtype=np.int64))


@dataclass(frozen=True)
class SubjectHit:
    watchlist: str
    row: int
    score: float


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[SubjectHit]
    searched: int
    expired_skipped: int


@dataclass(frozen=True)
class SnapshotTag:
    """What a saved index was built from; it is loaded only when all of it matches."""

    store_id: str
    change_seq: int
    model_id: str
    dimension: int


@dataclass(frozen=True)
class ListBackend:
    """Where each watch-list's vectors are searched (``watchlist.index``).

    ``new`` makes the empty index of one list (its name and the dimension);
    ``discard`` lets go of the index of a list deleted from the store, its
    vectors with it (templates of a deleted list must not linger in Milvus).
    ``snapshots``: the lists live in this process's memory as exact FAISS
    indexes, which a snapshot file saves and a start loads; another backend
    (Milvus) keeps the vectors itself, so its lists are refilled from the
    store at every load and no snapshot is written for them.
    """

    name: str
    new: Callable[[str, int], VectorIndex]
    discard: Callable[[VectorIndex], None]
    snapshots: bool


FAISS_LISTS = ListBackend("faiss", lambda name, dimension: FaissIndex(dimension), FaissIndex.close, snapshots=True)


def milvus_collection(prefix: str, name: str) -> str:
    """The Milvus collection of watch-list ``name``: Milvus allows letters, digits and underscores only."""
    return f"{prefix}_{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def milvus_lists(uri: str, prefix: str, client: MilvusClientSettings) -> ListBackend:
    """Each watch-list in a Milvus collection of its own (FLAT: exact, as FAISS;
    :func:`milvus_collection`), reached with ``client``'s token and time limits.
    A list's collection is emptied when its index is made (the store is the
    source of truth, nothing left in Milvus is trusted) and when the list is
    deleted."""
    from verifier.vectors.milvus_index import MilvusIndex

    def new(name: str, dimension: int) -> VectorIndex:
        index = MilvusIndex(uri, milvus_collection(prefix, name), dimension, token=client.milvus_token(),
                            timeout_s=client.milvus_timeout_seconds,
                            check_timeout_s=client.milvus_check_timeout_seconds,
                            bulk_timeout_s=client.milvus_bulk_timeout_seconds, ca_file=client.milvus_ca())
        index.clear()
        return index

    def discard(index: VectorIndex) -> None:
        cast(MilvusIndex, index).clear()
        index.close()

    return ListBackend("milvus", new, discard, snapshots=False)


def list_backend(settings: WatchlistSettings, data_dir: Path) -> ListBackend:
    """The backend ``watchlist.index`` names (a Milvus Lite file's folder made owner-only)."""
    if settings.index == "faiss":
        return FAISS_LISTS
    uri = settings.milvus_address(data_dir)
    if "://" not in uri:
        private_directory(Path(uri).parent)
    return milvus_lists(uri, settings.milvus_collection_prefix, settings)


class WatchlistIndex:
    """Exact inner-product search over the live templates of one model, one
    :class:`~verifier.vectors.base.VectorIndex` per watch-list."""

    def __init__(self, dimension: int, left_out: np.ndarray | None = None, backend: ListBackend = FAISS_LISTS) -> None:
        self.dimension = dimension
        self.backend = backend
        # Template ids of the stored templates this index was built without, as
        # they failed the template checks: a snapshot carries them so that a
        # start from it can report them without scanning the whole store.
        self.left_out = np.empty(0, dtype=np.int64) if left_out is None else np.asarray(left_out, dtype=np.int64)
        self._lock = ReadWriteLock()
        self._lists: dict[str, VectorIndex] = {}
        self._expiry: dict[int, float] = {}

    def add_watchlist(self, name: str) -> None:
        with self._lock.writing():
            if name not in self._lists:
                self._lists[name] = self.backend.new(name, self.dimension)

    def drop_watchlist(self, name: str) -> None:
        """Forget a watch-list and its templates (the store has deleted them)."""
        with self._lock.writing():
            index = self._lists.pop(name, None)
            if index is not None:
                for row in np.unique(index.ids() >> TEMPLATE_BITS).tolist():
                    self._expiry.pop(row, None)
                self.backend.discard(index)

    def has_watchlist(self, name: str) -> bool:
        with self._lock.reading():
            return name in self._lists

    def watchlists(self) -> list[str]:
        with self._lock.reading():
            return sorted(self._lists)

    def add_subject(self, watchlist: str, row: int, vectors: np.ndarray, expires_at: float | None) -> None:
        """Add all of one subject's templates at once: searches see all or none."""
        keys = _subject_ids(row, len(vectors))
        with self._lock.writing():
            self._lists[watchlist].add(keys, vectors)
            if expires_at is not None:
                self._expiry[row] = expires_at

    def remove_subject(self, watchlist: str, row: int, count: int) -> None:
        with self._lock.writing():
            index = self._lists.get(watchlist)
            if index is not None:
                index.remove(_subject_ids(row, count))
            self._expiry.pop(row, None)

    def set_expiries(self, expiries: dict[int, float]) -> None:
        with self._lock.writing():
            self._expiry = dict(expiries)

    def sweep(self, now: float) -> int:
        """Drop the templates of subjects expired by ``now``; returns how many subjects."""
        with self._lock.reading():
            if not any(when <= now for when in self._expiry.values()):
                return 0
        with self._lock.writing():
            expired = {row for row, when in self._expiry.items() if when <= now}
            for index in self._lists.values():
                keys = index.ids()
                doomed = keys[np.isin(keys >> TEMPLATE_BITS, np.fromiter(expired, dtype=np.int64))]
                if len(doomed):
                    index.remove(doomed)
            for row in expired:
                del self._expiry[row]
            return len(expired)

    def keys(self) -> dict[str, np.ndarray]:
        """Every watch-list's template ids, sorted: to check the index against the store."""
        with self._lock.reading():
            return {name: index.ids() for name, index in self._lists.items()}

    def size(self, watchlists: list[str] | None = None) -> int:
        """Templates held, in the named watch-lists (all when None): a search's gallery size."""
        with self._lock.reading():
            names = self._lists if watchlists is None else watchlists
            return sum(self._lists[name].size() for name in names if name in self._lists)

    def search(
        self, vector: np.ndarray, watchlists: list[str], top_k: int, threshold: float, now: float
    ) -> SearchOutcome:
        """The best ``top_k`` subjects scoring at least ``threshold`` in the given
        watch-lists, each scored by its best template, expired ones skipped.

        Asks each list for twice as many templates as subjects wanted and doubles
        that until enough distinct live subjects are found, the scores fall below
        the threshold, or the gallery is exhausted; every answer comes from one
        search pass per list under one read lock.
        """
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        with self._lock.reading():
            lists = [(name, self._lists[name], self._lists[name].size()) for name in watchlists]
            total = sum(size for _, _, size in lists)
            k = min(total, 2 * top_k)
            while True:
                best, skipped, lowest = self._best_subjects(query, lists, k, now)
                live = [hit for hit in best if hit.score >= threshold][:top_k]
                if len(live) >= top_k or k >= total or lowest < threshold:
                    return SearchOutcome(live, total, skipped)
                k = min(total, 2 * k)

    def _best_subjects(
        self, query: np.ndarray, lists: list[tuple[str, VectorIndex, int]], k: int, now: float
    ) -> tuple[list[SubjectHit], int, float]:
        found: list[tuple[float, int, str]] = []
        for name, index, size in lists:
            if size:
                scores, keys = index.search(query, min(k, size))
                found.extend((float(s), int(key), name) for s, key in zip(scores, keys))
        found.sort(key=lambda hit: -hit[0])
        found = found[:k]
        best: dict[int, SubjectHit] = {}
        skipped: set[int] = set()
        for score, key, name in found:
            row = key >> TEMPLATE_BITS
            if row in best or row in skipped:
                continue
            if self._expiry.get(row, np.inf) <= now:
                skipped.add(row)
                continue
            best[row] = SubjectHit(name, row, score)
        lowest = found[-1][0] if found else -np.inf
        return list(best.values()), len(skipped), lowest

    @classmethod
    def build(
        cls, dimension: int, lists: dict[str, tuple[np.ndarray, np.ndarray]], left_out: np.ndarray | None = None,
        backend: ListBackend = FAISS_LISTS,
    ) -> "WatchlistIndex":
        """An index of the given (template ids, vectors) of each watch-list, built
        without the stored templates ``left_out`` (their ids)."""
        index = cls(dimension, left_out, backend)
        for name, (keys, vectors) in lists.items():
            index._lists[name] = backend.new(name, dimension)
            if len(keys):
                index._lists[name].add(keys, vectors)
        return index

    def close(self) -> None:
        """Release what the lists hold open (a Milvus connection each); the index is not used after."""
        with self._lock.writing():
            for index in self._lists.values():
                index.close()

    def serialized(self, tag: SnapshotTag) -> "SerializedIndex | None":
        """The index as it is now, copied into memory as the parts of a snapshot
        file: taken quickly (FAISS writes each list out in pieces; its
        ``serialize_index`` was five times slower at a million templates) so
        that a caller holding the write lock holds it briefly, and written or
        sent afterwards. None on a backend that keeps no snapshot."""
        if not self.backend.snapshots:
            return None
        parts: list[tuple[str, list[bytes]]] = []
        with self._lock.reading():
            for name, index in self._lists.items():
                pieces: list[bytes] = []
                cast(FaissIndex, index).write(lambda piece: pieces.append(piece) or len(piece))
                parts.append((name, pieces))
        return SerializedIndex(tag, parts, self.left_out.copy())

    def save(self, path: Path, tag: SnapshotTag) -> None:
        """Write the index atomically (temporary file, fsync, rename): a crash
        leaves the old snapshot or the new one, never half of one. Nothing on a
        backend that keeps no snapshot."""
        serialized = self.serialized(tag)
        if serialized is not None:
            serialized.write(path)

    @classmethod
    def load(cls, path: Path, expected: SnapshotTag) -> "WatchlistIndex | None":
        """The saved index if it exists, is intact and was built from exactly ``expected``, else None."""
        loaded = cls._load(path, lambda tag: tag == expected)
        return None if loaded is None else loaded.index

    @classmethod
    def load_any(cls, path: Path) -> "LoadedIndex | None":
        """The saved index if it exists and is intact, with the tag it names, else
        None: what a replica loads while the store it belongs to is still
        arriving; whoever uses it compares the tag with the installed store's."""
        return cls._load(path, lambda tag: True)

    @classmethod
    def _load(cls, path: Path, accept: Callable[[SnapshotTag], bool]) -> "LoadedIndex | None":
        """A snapshot is of FAISS lists: what it loads is on :data:`FAISS_LISTS`."""
        digest = hashlib.sha256()

        def read(size: int) -> bytes:
            chunk = source.read(size)
            digest.update(chunk)
            return chunk

        try:
            with path.open("rb") as source:
                header = _read_trailer(source)
                tag = None if header is None else SnapshotTag(**header["tag"])
                if header is None or tag is None or not accept(tag):
                    return None
                source.seek(len(_SNAPSHOT_MAGIC))
                left_out = [int(key) for key in header["left_out"]]
                index = cls(tag.dimension, np.array(left_out, dtype=np.int64))
                for name, size in header["lists"].items():
                    start = source.tell()
                    loaded = FaissIndex.read(read, tag.dimension)
                    if loaded is None or source.tell() - start != size:
                        return None
                    index._lists[name] = loaded
                digest.update(_left_out_bytes(left_out))
                return LoadedIndex(index, tag) if digest.hexdigest() == header["sha256"] else None
        except (OSError, RuntimeError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class LoadedIndex:
    """An index loaded from a snapshot file, and the tag that file names."""

    index: WatchlistIndex
    tag: SnapshotTag


@dataclass(frozen=True)
class SerializedIndex:
    """An index captured as the parts of a snapshot file (see :meth:`WatchlistIndex.serialized`)."""

    tag: SnapshotTag
    # Each watch-list's FAISS index, in the pieces FAISS wrote it in (1 MB at most).
    parts: list[tuple[str, list[bytes]]]
    left_out: np.ndarray

    def chunks(self) -> Iterator[bytes]:
        """The snapshot file's bytes, a piece at a time; the digest in its trailer
        is computed on the way, so the file can be sent as it is made."""
        digest = hashlib.sha256()
        yield _SNAPSHOT_MAGIC
        for _, pieces in self.parts:
            for piece in pieces:
                digest.update(piece)
                yield piece
        left_out = self.left_out.tolist()
        digest.update(_left_out_bytes(left_out))
        trailer = json.dumps({
            "tag": asdict(self.tag), "lists": {name: sum(map(len, pieces)) for name, pieces in self.parts},
            "left_out": left_out, "sha256": digest.hexdigest(),
        }).encode()
        yield trailer + _TRAILER.pack(len(trailer), _SNAPSHOT_MAGIC)

    def write(self, path: Path) -> None:
        """Write the snapshot file atomically (temporary file, fsync, rename), owner-only."""
        write_private(path, self.chunks(), SNAPSHOT_FILE_MODE)


def _left_out_bytes(keys: list[int]) -> bytes:
    return json.dumps(keys).encode()


def snapshot_tag(path: Path) -> SnapshotTag | None:
    """The tag of a saved index, without loading it; None if absent or unreadable."""
    try:
        with path.open("rb") as source:
            header = _read_trailer(source)
        return None if header is None else SnapshotTag(**header["tag"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_trailer(source: BinaryIO) -> dict | None:
    source.seek(0, os.SEEK_END)
    end = source.tell()
    if end < len(_SNAPSHOT_MAGIC) + _TRAILER.size:
        return None
    source.seek(0)
    if source.read(len(_SNAPSHOT_MAGIC)) != _SNAPSHOT_MAGIC:
        return None
    source.seek(end - _TRAILER.size)
    length, magic = _TRAILER.unpack(source.read(_TRAILER.size))
    if magic != _SNAPSHOT_MAGIC or length > end:
        return None
    source.seek(end - _TRAILER.size - length)
    return json.loads(source.read(length))
