"""One suite for every 1:N vector index backend: FAISS exact, FAISS IVF,
Milvus Lite (embedded) and a real Milvus standalone server (its own process,
over gRPC on a loopback socket: the ``milvus_server`` fixture)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from verifier.vectors.base import IndexTag, VectorIndex
from verifier.vectors.faiss_index import TRAIN_PER_LIST, FaissIndex, training_size

DIMENSION = 32
COUNT = 4000
_names = itertools.count()


def _units(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def gallery() -> tuple[np.ndarray, np.ndarray]:
    return np.arange(10, 10 + COUNT, dtype=np.int64) << 8, _units(COUNT, 7)


@pytest.fixture(scope="module")
def milvus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install '.[milvus]')")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install '.[milvus]')")
    return tmp_path_factory.mktemp("milvus")


@pytest.fixture(params=["faiss_exact", "faiss_ivf", "milvus_lite", "milvus_server"])
def backend(request: pytest.FixtureRequest, gallery: tuple[np.ndarray, np.ndarray]) -> Iterator[VectorIndex]:
    ids, vectors = gallery
    if request.param == "milvus_lite":
        from verifier.vectors.milvus_index import MilvusIndex

        directory = request.getfixturevalue("milvus_dir")
        index: VectorIndex = MilvusIndex(str(directory / "lite.db"), f"suite_{next(_names)}", DIMENSION)
    elif request.param == "milvus_server":
        from verifier.vectors.milvus_index import MilvusIndex

        server = request.getfixturevalue("milvus_server")
        index = MilvusIndex(server.uri, f"suite_{next(_names)}", DIMENSION)
    else:
        source = lambda: iter([(ids, vectors)])  # noqa: E731 - the store's role in this suite
        index = FaissIndex(DIMENSION, approximate=request.param == "faiss_ivf", nprobe=16, min_train=1000,
                           source=source)
    index.add(ids, vectors)
    if isinstance(index, FaissIndex):
        index.wait()  # the IVF backend trains itself in the background once past min_train
    getattr(index, "flush", lambda: None)()
    yield index
    index.close()


def test_each_vector_finds_itself_first(backend: VectorIndex, gallery: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = gallery
    assert backend.size() == COUNT
    for row in (0, 1234, COUNT - 1):
        scores, keys = backend.search(vectors[row], 5)
        assert keys[0] == ids[row] and scores[0] == pytest.approx(1.0, abs=1e-4)
        assert list(scores) == sorted(scores, reverse=True)


def test_ivf_trains_itself_in_the_background(gallery: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = gallery
    index = FaissIndex(DIMENSION, approximate=True, nprobe=16, min_train=1000, source=lambda: iter([(ids, vectors)]))
    index.add(ids[:500], vectors[:500])
    assert index.kind == "exact"
    index.add(ids[500:], vectors[500:])
    index.wait()
    assert index.kind == "ivf" and index.size() == COUNT


def test_ivf_lists_are_trained_on_enough_vectors_each() -> None:
    """The fixed sample suffices for a million templates' 4,096 lists; ten
    million's 16,384 lists take 64 vectors each, not the 16 the sample gives."""
    sample = FaissIndex(DIMENSION).train_sample
    assert training_size(4096, sample) == sample
    assert training_size(16384, sample) == TRAIN_PER_LIST * 16384 > sample


def test_removed_vectors_are_never_found(backend: VectorIndex, gallery: tuple[np.ndarray, np.ndarray]) -> None:
    ids, vectors = gallery
    backend.remove(ids[100:102])
    for row in (100, 101):
        _, keys = backend.search(vectors[row], 10)
        assert ids[row] not in keys
    assert backend.size() == COUNT - 2
    assert not np.isin(ids[100:102], backend.ids()).any()


def test_added_vectors_are_found_at_once(backend: VectorIndex) -> None:
    fresh = _units(3, 99)
    keys = np.array([(5_000_000 << 8) + i for i in range(3)], dtype=np.int64)
    backend.add(keys, fresh)
    for vector, key in zip(fresh, keys):
        assert backend.search(vector, 1)[1][0] == key


def test_agrees_with_exact_search_on_noisy_duplicates(backend: VectorIndex,
                                                      gallery: tuple[np.ndarray, np.ndarray]) -> None:
    """A probe near a stored vector (a second photo of a registered face) finds it."""
    ids, vectors = gallery
    rng = np.random.default_rng(3)
    rows = rng.choice(COUNT, 50, replace=False)
    probes = vectors[rows] + 0.05 * rng.standard_normal((50, DIMENSION)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    found = [backend.search(probe, 1)[1][0] for probe in probes]
    assert found == list(ids[rows])


def test_faiss_snapshots_load_only_when_the_tag_matches(gallery: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    ids, vectors = gallery
    for approximate in (False, True):
        index = FaissIndex(DIMENSION, approximate=approximate, min_train=1000, source=lambda: iter([(ids, vectors)]))
        index.add(ids, vectors)
        index.wait()
        tag = IndexTag("store", 7, "model", DIMENSION)
        index.save(tmp_path / "snap", tag)
        loaded = FaissIndex(DIMENSION, approximate=approximate)
        assert not loaded.load(tmp_path / "snap", IndexTag("store", 8, "model", DIMENSION))
        assert loaded.load(tmp_path / "snap", tag) and loaded.kind == index.kind
        assert np.array_equal(loaded.ids(), np.sort(ids))
        (tmp_path / "snap").write_bytes((tmp_path / "snap").read_bytes()[:-100] + b"x" * 100)
        assert not FaissIndex(DIMENSION).load(tmp_path / "snap", tag)
