"""One vector layer under the watch-lists: a list on Milvus (embedded Milvus
Lite, an exact FLAT collection) answers as the default FAISS list does, and a
service set to Milvus keeps no snapshot but refills its lists from the store."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from tests.watchlist.samples import local_settings, templates_of, unit_vectors
from verifier.config import Settings, WatchlistSettings
from verifier.pipeline import FaceEngine
from verifier.watchlist.index import (
    FAISS_LISTS,
    SnapshotTag,
    WatchlistIndex,
    milvus_collection,
    milvus_lists,
    template_ids,
)
from verifier.watchlist.service import WatchlistService
from verifier.watchlist.store import SubjectEntry

DIMENSION = 32
_prefixes = itertools.count()


@pytest.fixture()
def milvus_uri(tmp_path: Path) -> str:
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install '.[milvus]')")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install '.[milvus]')")
    return str(tmp_path / "lite.db")


def _gallery() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two lists of subjects with three templates each (rows 1.. and 100..)."""
    lists = {}
    for name, first, seed in (("wanted", 1, 1), ("missing", 100, 2)):
        rows = np.repeat(np.arange(first, first + 40, dtype=np.int64), 3)
        positions = np.tile(np.arange(3, dtype=np.int64), 40)
        lists[name] = (template_ids(rows, positions), unit_vectors(120, DIMENSION, seed))
    return lists


def _answers(index: WatchlistIndex, probes: np.ndarray) -> list[list[tuple[str, int, float]]]:
    return [[(hit.watchlist, hit.row, round(hit.score, 5)) for hit in
             index.search(probe, ["wanted", "missing"], 5, -1.0, time.time()).hits] for probe in probes]


def test_a_list_on_milvus_answers_as_a_list_on_faiss(milvus_uri: str) -> None:
    prefix = f"lists_{next(_prefixes)}"
    milvus = milvus_lists(milvus_uri, prefix, WatchlistSettings())
    lists = _gallery()
    probes = np.concatenate([lists["wanted"][1][[0, 50]], lists["missing"][1][[7]], unit_vectors(3, DIMENSION, 9)])
    on_faiss = WatchlistIndex.build(DIMENSION, lists, np.array([5], dtype=np.int64))
    on_milvus = WatchlistIndex.build(DIMENSION, lists, np.array([5], dtype=np.int64), milvus)
    try:
        assert _answers(on_milvus, probes) == _answers(on_faiss, probes)
        for index in (on_faiss, on_milvus):
            index.remove_subject("wanted", 1, 3)
            index.drop_watchlist("missing")
        from verifier.vectors.milvus_index import MilvusIndex

        dropped = MilvusIndex(milvus_uri, milvus_collection(prefix, "missing"), DIMENSION)
        assert dropped.size() == 0  # a deleted list's templates do not linger in Milvus
        dropped.close()
        for index in (on_faiss, on_milvus):
            index.add_watchlist("missing")
            index.add_subject("missing", 500, lists["wanted"][1][:3], time.time() + 3600)
        assert _answers(on_milvus, probes) == _answers(on_faiss, probes)
        assert {n: k.tolist() for n, k in on_milvus.keys().items()} == {n: k.tolist() for n, k in on_faiss.keys().items()}
        assert on_milvus.size() == on_faiss.size() == 117 + 3
        tag = SnapshotTag("store", 1, "model", DIMENSION)
        assert on_faiss.serialized(tag) is not None and on_milvus.serialized(tag) is None
    finally:
        on_milvus.close()


def test_a_snapshot_of_faiss_lists_loads_as_faiss_lists(tmp_path: Path) -> None:
    index = WatchlistIndex.build(DIMENSION, _gallery(), np.array([5], dtype=np.int64))
    tag = SnapshotTag("store", 7, "model", DIMENSION)
    index.save(tmp_path / "index.snapshot", tag)
    loaded = WatchlistIndex.load(tmp_path / "index.snapshot", tag)
    assert loaded is not None and loaded.backend is FAISS_LISTS and loaded.left_out.tolist() == [5]
    probes = unit_vectors(4, DIMENSION, 11)
    assert _answers(loaded, probes) == _answers(index, probes)


def test_a_service_on_milvus_identifies_and_refills_from_the_store(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install '.[milvus]')")
    local = local_settings(settings, tmp_path)
    local.watchlist.index = "milvus"
    service = WatchlistService.open(local, engine)
    assert service.load().source == "store"
    service.create_watchlist("wanted", "")
    first, second = templates_of(engine, 2, seed=1), templates_of(engine, 2, seed=2)
    service.enrol(SubjectEntry("wanted", "first", "warrant", "police"), first)
    service.enrol(SubjectEntry("wanted", "second", "warrant", "police"), second)
    assert [c.subject.entry.subject_id for c in service.identify(second[1]).candidates] == ["second"]
    service.close()
    snapshot = local.watchlist.snapshot_file(tmp_path)
    assert snapshot is not None and not snapshot.exists()  # a Milvus list is not saved as FAISS
    assert (tmp_path / local.watchlist.milvus_uri).exists()

    service = WatchlistService.open(local, engine)
    try:
        assert service.load().source == "store" and service.consistency().agrees
        assert [c.subject.entry.subject_id for c in service.identify(first[0]).candidates] == ["first"]
    finally:
        service.close()
