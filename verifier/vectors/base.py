"""The interface every 1:N vector index keeps, and how one is chosen.

An index holds unit vectors under 64-bit ids chosen by its owner (the store's
rows), scores by inner product (the cosine of unit vectors) and is always
derived: the store is the source of truth, and an index that is lost, stale
or unreadable is rebuilt from it. Implementations are thread-safe: searches
run beside each other, adds and removes one at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class IndexTag:
    """What a saved index was built from; it is loaded only when all of it matches."""

    store_id: str
    change_seq: int
    model_id: str
    dimension: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class VectorIndex(Protocol):
    dimension: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under ``ids`` (none of them present)."""

    def remove(self, ids: np.ndarray) -> None:
        """Remove the vectors of ``ids``; absent ids are ignored."""

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` (scores, ids) for one query vector, best first."""

    def size(self) -> int:
        """Vectors held."""

    def ids(self) -> np.ndarray:
        """Every id held, sorted: to check the index against the store."""

    def close(self) -> None:
        """Release what the index holds open (files, connections, threads)."""


def unit_rows(vectors: np.ndarray, dimension: int) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (n, dimension) array, refused if not."""
    array = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dimension)
    return array
