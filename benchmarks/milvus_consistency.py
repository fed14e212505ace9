"""Which consistency each registry operation needs on a Milvus server, measured.

    python -m benchmarks.milvus_consistency --size 100000 --out results.jsonl

On a Milvus standalone server (``--milvus-uri``, or one started here from the
``milvus`` package), a FLAT collection of ``--size`` random 128-D unit vectors,
flushed:

- one search, and one count of the rows, at each consistency level (Strong,
  Bounded, Session) from the process that wrote the collection: p50 and p99;
- a write as the service makes it (MilvusIndex.add: insert, then the ids read
  back; MilvusIndex.remove: delete, then read back until gone) against the
  bare insert and delete: what the guard costs;
- whether a search made right after a bare insert (or delete) sees it, at each
  level: what the guard is for.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from benchmarks.reporting import append_line
from verifier.vectors.milvus_server import LocalMilvus

DIMENSION = 128
LEVELS = ("Strong", "Bounded", "Session")
COLLECTION = "consistency"


def _units(count: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, DIMENSION), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _timed(action: Callable[[], object], repeats: int) -> dict[str, float]:
    took = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        took.append((time.perf_counter() - began) * 1000.0)
    return {"p50_ms": round(float(np.percentile(took, 50)), 2), "p99_ms": round(float(np.percentile(took, 99)), 2)}


def measure(uri: str, size: int, repeats: int, seed: int) -> list[dict]:
    from verifier.vectors.milvus_index import MilvusIndex

    rng = np.random.default_rng(seed)
    index = MilvusIndex(uri, COLLECTION, DIMENSION, bulk_timeout_s=3600.0)
    index.clear()
    for start in range(0, size, 50_000):
        index.add(np.arange(start, min(size, start + 50_000)), _units(min(50_000, size - start), rng))
    index.flush()
    client = index._client  # the same connection the index writes with: Session sees its writes
    queries = _units(repeats, rng)
    rows: list[dict] = []
    for level in LEVELS:
        it = iter(queries)
        stats = _timed(lambda: client.search(COLLECTION, data=[next(it).tolist()], limit=10,
                                             search_params={"metric_type": "IP"}, consistency_level=level), repeats)
        rows.append({"operation": "search", "consistency": level, "size": size, **stats})
    for level in LEVELS:  # the gallery's size, which every watch-list search and registration asks for
        stats = _timed(lambda: client.query(COLLECTION, filter="", output_fields=["count(*)"],
                                            consistency_level=level), repeats)
        rows.append({"operation": "count", "consistency": level, "size": size, **stats})
    rows.append({"operation": "MilvusIndex.size()", "size": size, **_timed(index.size, repeats)})
    fresh = _units(repeats * 4, rng)
    keys = iter(range(10 * size, 10 * size + len(fresh)))
    vectors = iter(fresh)
    rows.append({"operation": "insert (bare)", "size": size, **_timed(
        lambda: client.insert(COLLECTION, [{"id": next(keys), "vector": next(vectors).tolist()}]), repeats)})
    rows.append({"operation": "MilvusIndex.add (insert, read back)", "size": size, **_timed(
        lambda: index.add(np.array([next(keys)]), next(vectors)[None]), repeats)})
    removable = iter(range(10 * size, 10 * size + 2 * repeats))  # the bare inserts, then the guarded ones
    rows.append({"operation": "delete (bare)", "size": size, **_timed(
        lambda: client.delete(COLLECTION, ids=[next(removable)]), repeats)})
    rows.append({"operation": "MilvusIndex.remove (delete, read back until gone)", "size": size, **_timed(
        lambda: index.remove(np.array([next(removable)])), repeats)})
    for level in LEVELS:
        seen_insert = seen_delete = 0
        for _ in range(repeats // 4):
            key, vector = next(keys), next(vectors)
            client.insert(COLLECTION, [{"id": key, "vector": vector.tolist()}])
            hits = client.search(COLLECTION, data=[vector.tolist()], limit=1, search_params={"metric_type": "IP"},
                                 consistency_level=level)[0]
            seen_insert += bool(hits) and hits[0]["id"] == key
            client.delete(COLLECTION, ids=[key])
            hits = client.search(COLLECTION, data=[vector.tolist()], limit=1, search_params={"metric_type": "IP"},
                                 consistency_level=level)[0]
            seen_delete += bool(hits) and hits[0]["id"] == key
        rows.append({"operation": "search right after a bare write", "consistency": level, "size": size,
                     "insert_seen": f"{seen_insert}/{repeats // 4}", "delete_seen": f"{seen_delete}/{repeats // 4}"})
    index.clear()
    index.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--milvus-uri", default=None, help="a running Milvus server; else one is started here")
    parser.add_argument("--out", type=Path, default=None, help="append each result as a JSON line here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with ExitStack() as stack:
        uri = args.milvus_uri
        if uri is None:
            uri = stack.enter_context(LocalMilvus(Path(stack.enter_context(tempfile.TemporaryDirectory())))).uri
        for row in measure(uri, args.size, args.repeats, args.seed):
            append_line(row, args.out)


if __name__ == "__main__":
    main()
