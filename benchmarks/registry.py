"""The registry's duplicate search at scale: latency, memory, build time and
agreement with exact search, per index backend.

Size comes from synthetic unit vectors drawn from a Gaussian fitted to the
real embeddings (their mean and covariance, then normalised), so that they
fill the same cone of the sphere real faces do (isotropic Gaussian vectors
would not: IVF trained on them misplaces real faces); accuracy from real
LFW dev embeddings planted among them: one image of each person with two or
more is "registered", a second image of that person is a genuine duplicate
query, and images of people never planted are newcomer queries. Agreement is
the share of queries for which the backend gives the same answer as exact
search at the duplicate threshold: the same traveller above it, or none.

    python -m benchmarks.registry --sizes 1000000 3000000 --backends faiss_exact faiss_ivf
    python -m benchmarks.registry --sizes 1000000 --backends milvus \
        --milvus-index FLAT HNSW:M=16,efConstruction=200 IVF_FLAT:nlist=1024 --milvus-ef 64 256 --milvus-nprobe 64
    python -m benchmarks.registry --sizes 200000 --backends milvus_lite

``milvus`` is a Milvus standalone server: the one ``--milvus-uri`` names, or
else one started here from the ``milvus`` package (verifier.vectors.milvus_server)
in a temporary folder and stopped at the end. The vectors are inserted and
flushed once per size; then each ``--milvus-index`` is built over them in
turn (build time: the index alone) and searched at each of its search
parameters (``ef`` for HNSW, ``nprobe`` for IVF_FLAT), with Session
consistency as the service searches. Memory is then the server's resident set.

Latency is one query at a time with FAISS limited to ``--threads`` threads
(2: this machine's cores); memory is the growth of the process's resident set
while the index is built and searched.
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import faiss
import numpy as np
import psutil

from benchmarks.reporting import append_line
from verifier.config import get_settings
from verifier.evaluation.cache import embed_set
from verifier.evaluation.datasets import load_set
from verifier.pipeline import FaceEngine, Selection
from verifier.vectors.faiss_index import FaissIndex, _nlist_for, build_ivf, training_size
from verifier.vectors.milvus_server import LocalMilvus

CHUNK = 250_000
LFW_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-dev"


class Shape:
    """The mean and covariance factor of the real embeddings, which synthetic vectors follow."""

    mean: np.ndarray
    factor: np.ndarray


SHAPE = Shape()


def fit_shape(vectors: np.ndarray) -> None:
    SHAPE.mean = vectors.mean(axis=0).astype(np.float32)
    covariance = np.cov(vectors, rowvar=False) + 1e-6 * np.eye(vectors.shape[1])
    SHAPE.factor = np.linalg.cholesky(covariance).T.astype(np.float32)


def synthetic(count: int, dimension: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """Unit vectors in chunks (start row, vectors), the same on every call."""
    for start in range(0, count, CHUNK):
        rng = np.random.default_rng((seed, start))
        block = rng.standard_normal((min(CHUNK, count - start), dimension), dtype=np.float32) @ SHAPE.factor
        block += SHAPE.mean
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        yield start, block


def real_embeddings(lfw: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, person index) of every LFW dev image the pipeline acquires."""
    settings = get_settings()
    engine = FaceEngine.from_settings(settings)
    labeled = load_set(lfw)
    templates = embed_set(engine, labeled, settings.evaluation.cache_dir, Selection.CENTRE)
    return templates.vectors[templates.acquired], np.asarray(labeled.subjects)[templates.acquired]


def plant(vectors: np.ndarray, people: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(planted gallery vectors, query vectors, index of the planted vector each
    query's person has, or -1 for a newcomer)."""
    rng = np.random.default_rng(seed)
    by_person: dict[int, list[int]] = {}
    for i, person in enumerate(people.tolist()):
        by_person.setdefault(person, []).append(i)
    multi = [rows for rows in by_person.values() if len(rows) >= 2]
    single = [rows for rows in by_person.values() if len(rows) == 1]
    planted, queries, expected = [], [], []
    for rows in multi:
        chosen = rng.permutation(rows)
        expected.append(len(planted))
        planted.append(vectors[chosen[0]])
        queries.append(vectors[chosen[1]])
    for rows in single:
        queries.append(vectors[rows[0]])
        expected.append(-1)
    return np.stack(planted), np.stack(queries), np.array(expected)


def exact_best(queries: np.ndarray, size: int, dimension: int, planted: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The true best (score, id) of every query over the synthetic vectors and the planted ones, streamed."""
    best_score = np.full(len(queries), -np.inf, dtype=np.float32)
    best_id = np.full(len(queries), -1, dtype=np.int64)
    for start, block in synthetic(size, dimension, seed):
        scores = queries @ block.T
        top = scores.argmax(axis=1)
        better = scores[np.arange(len(queries)), top] > best_score
        best_score[better] = scores[np.arange(len(queries)), top][better]
        best_id[better] = start + top[better]
    scores = queries @ planted.T
    top = scores.argmax(axis=1)
    better = scores[np.arange(len(queries)), top] > best_score
    best_score[better] = scores[np.arange(len(queries)), top][better]
    best_id[better] = size + top[better]
    return best_score, best_id


def _rss() -> int:
    return psutil.Process().memory_info().rss


def build(backend: str, size: int, dimension: int, planted: np.ndarray, seed: int, nprobe: int, workdir: Path):
    """The backend's index holding the synthetic and planted vectors."""
    if backend == "milvus_lite":
        from verifier.vectors.milvus_index import MilvusIndex

        index = MilvusIndex(str(workdir / "lite.db"), "bench", dimension)
        for start, block in synthetic(size, dimension, seed):
            index.add(np.arange(start, start + len(block), dtype=np.int64), block)
        index.add(np.arange(size, size + len(planted), dtype=np.int64), planted)
        index.flush()
        return index
    index = FaissIndex(dimension, approximate=backend == "faiss_ivf", nprobe=nprobe)
    if backend == "faiss_exact":
        for start, block in synthetic(size, dimension, seed):
            index.add(np.arange(start, start + len(block), dtype=np.int64), block)
    else:
        # Trained on a sample as large as the service would take (drawn apart from
        # the gallery), filled chunk by chunk: never two copies of the vectors.
        nlist = _nlist_for(size)
        wanted = min(size, training_size(nlist, index.train_sample))
        sample = np.concatenate([block for _, block in synthetic(wanted, dimension, seed + 1)])
        ivf = build_ivf(dimension, np.zeros(0, np.int64), sample, nlist, nprobe, len(sample))
        for start, block in synthetic(size, dimension, seed):
            ivf.add_with_ids(block, np.arange(start, start + len(block), dtype=np.int64))
        index._index = ivf
    index.add(np.arange(size, size + len(planted), dtype=np.int64), planted)
    return index


def measure(backend: str, size: int, dimension: int, planted: np.ndarray, queries: np.ndarray,
            truth: tuple[np.ndarray, np.ndarray], threshold: float, nprobes: list[int], depth: int,
            seed: int) -> Iterator[dict]:
    """One build of the backend, then the queries at each ``nprobe`` (IVF: the
    same index, probing more or fewer lists; others: one row)."""
    gc.collect()
    before = _rss()
    true_score, true_id = truth
    exact = np.where(true_score >= threshold, true_id, -1)
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        index = build(backend, size, dimension, planted, seed, nprobes[0], Path(workdir))
        built = time.perf_counter() - start
        for nprobe in nprobes:
            if backend == "faiss_ivf":
                index._index.nprobe = nprobe
            latencies, answers = _answers(index, queries, depth, threshold)
            memory = _rss() - before
            yield {"backend": backend, "size": size + len(planted),
                   "nprobe": nprobe if backend == "faiss_ivf" else None,
                   "nlist": int(index._index.nlist) if backend == "faiss_ivf" else None,
                   "build_s": round(built, 1), "p50_ms": round(float(np.percentile(latencies, 50)), 3),
                   "p99_ms": round(float(np.percentile(latencies, 99)), 3), "memory_gb": round(memory / 2**30, 2),
                   "agreement": float(np.mean(np.array(answers) == exact)), "queries": len(queries),
                   "exact_hits": int((exact >= 0).sum()), "threshold": threshold}
        index.close()


def _answers(index, queries: np.ndarray, depth: int, threshold: float) -> tuple[list[float], list[int]]:
    """One search per query: (latencies in ms, the best id at or above the threshold, or -1)."""
    latencies, answers = [], []
    for query in queries:
        began = time.perf_counter()
        scores, ids = index.search(query, depth)
        latencies.append((time.perf_counter() - began) * 1000.0)
        answers.append(int(ids[0]) if len(ids) and scores[0] >= threshold else -1)
    return latencies, answers


def index_spec(text: str) -> tuple[str, dict[str, int]]:
    """``HNSW:M=16,efConstruction=200`` as ("HNSW", {"M": 16, "efConstruction": 200})."""
    kind, _, params = text.partition(":")
    if kind not in ("FLAT", "IVF_FLAT", "HNSW"):
        raise argparse.ArgumentTypeError(f"index type {kind!r}: FLAT, IVF_FLAT or HNSW")
    try:
        return kind, {key: int(value) for key, value in (item.split("=") for item in params.split(",") if item)}
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: parameters are name=integer, comma-separated") from error


def server_setting(text: str) -> tuple[str, str]:
    """``dataCoord.segment.maxSize=128`` as ("dataCoord.segment.maxSize", "128")."""
    key, separator, value = text.partition("=")
    if not separator or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: a milvus.yaml setting is KEY=VALUE")
    return key, value


def measure_milvus(uri: str, size: int, dimension: int, planted: np.ndarray, queries: np.ndarray,
                   truth: tuple[np.ndarray, np.ndarray], threshold: float, depth: int, seed: int,
                   indexes: list[tuple[str, dict[str, int]]], efs: list[int], nprobes: list[int],
                   server_pid: int | None, server_settings: dict[str, str] | None = None) -> Iterator[dict]:
    """Insert and flush once, then build and search each index type in turn on a Milvus server."""
    from verifier.vectors.milvus_index import MilvusIndex

    true_score, true_id = truth
    exact = np.where(true_score >= threshold, true_id, -1)
    server = psutil.Process(server_pid) if server_pid else None
    index = MilvusIndex(uri, f"bench_{size}_{seed}", dimension, bulk_timeout_s=7200.0)
    index.clear()
    start = time.perf_counter()
    for first, block in synthetic(size, dimension, seed):
        index.add(np.arange(first, first + len(block), dtype=np.int64), block)
    index.add(np.arange(size, size + len(planted), dtype=np.int64), planted)
    index.flush()
    loaded = time.perf_counter() - start
    for kind, params in indexes:
        began = time.perf_counter()
        settings = [{"ef": ef} for ef in efs] if kind == "HNSW" else \
            [{"nprobe": n} for n in nprobes] if kind == "IVF_FLAT" else [{}]
        index.reindex(kind, params, settings[0])
        built = time.perf_counter() - began
        for search in settings:
            index.set_search_params(search)
            _answers(index, queries[:50], depth, threshold)  # warm: the first searches load caches
            latencies, answers = _answers(index, queries, depth, threshold)
            yield {"backend": "milvus", "index": kind, "index_params": params, "search_params": search,
                   "nprobe": None, "size": size + len(planted), "insert_flush_s": round(loaded, 1),
                   "build_s": round(built, 1), "p50_ms": round(float(np.percentile(latencies, 50)), 3),
                   "p99_ms": round(float(np.percentile(latencies, 99)), 3),
                   "server_rss_gb": round(server.memory_info().rss / 2**30, 2) if server else None,
                   "agreement": float(np.mean(np.array(answers) == exact)), "queries": len(queries),
                   "exact_hits": int((exact >= 0).sum()), "threshold": threshold, "consistency": "Session",
                   "segments": sorted((int(segment.num_rows) for segment in
                                       index._client.list_loaded_segments(index.collection)), reverse=True),
                   "server_settings": server_settings or {}}
    index.clear()
    index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--backends", nargs="+", default=["faiss_exact", "faiss_ivf"],
                        choices=["faiss_exact", "faiss_ivf", "milvus", "milvus_lite"])
    parser.add_argument("--milvus-uri", default=None, help="a running Milvus server; else one is started here")
    parser.add_argument("--milvus-index", type=index_spec, nargs="+", default=[("FLAT", {})],
                        help="index types to build in turn: TYPE[:name=value,...]")
    parser.add_argument("--milvus-ef", type=int, nargs="+", default=[get_settings().registry.milvus_search_ef])
    parser.add_argument("--milvus-nprobe", type=int, nargs="+", default=[64])
    parser.add_argument("--milvus-set", type=server_setting, nargs="+", default=[],
                        help="settings of the started server's milvus.yaml, KEY=VALUE by dotted key "
                             "(dataCoord.segment.maxSize=128: segments of 128 MB, not the package's 512)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[get_settings().registry.ivf_nprobe])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", type=int, default=3000, help="at most this many queries (genuine and newcomer)")
    parser.add_argument("--lfw", type=Path, default=LFW_DEV)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=None, help="append each result as a JSON line here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    faiss.omp_set_num_threads(args.threads)
    settings = get_settings()
    threshold, depth = settings.registry.duplicate_threshold, settings.registry.search_depth
    vectors, people = real_embeddings(args.lfw)
    fit_shape(vectors)
    planted, queries, _ = plant(vectors, people, args.seed)
    rng = np.random.default_rng(args.seed)
    if len(queries) > args.queries:
        queries = queries[rng.choice(len(queries), args.queries, replace=False)]
    dimension = vectors.shape[1]
    with ExitStack() as stack:
        uri, server_pid = args.milvus_uri, None
        if "milvus" in args.backends and uri is None:
            server = stack.enter_context(LocalMilvus(Path(stack.enter_context(tempfile.TemporaryDirectory())),
                                                         overrides=dict(args.milvus_set)))
            uri, server_pid = server.uri, server.pid
        for size in args.sizes:
            truth = exact_best(queries, size, dimension, planted, args.seed)
            for backend in args.backends:
                if backend == "milvus":
                    results = measure_milvus(uri, size, dimension, planted, queries, truth, threshold, depth,
                                             args.seed, args.milvus_index, args.milvus_ef, args.milvus_nprobe,
                                             server_pid, dict(args.milvus_set))
                else:
                    nprobes = args.nprobe if backend == "faiss_ivf" else [0]
                    results = measure(backend, size, dimension, planted, queries, truth, threshold, nprobes, depth,
                                      args.seed)
                for result in results:
                    append_line(result, args.out)


if __name__ == "__main__":
    main()
