"""The FAISS index: exact answers, subjects scored by their best template, expiry,
snapshots trusted only when their tag matches, and all-or-none visibility under load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.watchlist.samples import unit_vectors
from verifier.watchlist.index import TEMPLATE_BITS, SnapshotTag, WatchlistIndex, template_ids

DIM = 192
TAG = SnapshotTag(store_id="a" * 32, change_seq=7, model_id="mobilefacenet-192:bf17c63426dc", dimension=DIM)


def _gallery(subjects: int, seed: int, watchlist: str = "wanted") -> tuple[WatchlistIndex, np.ndarray]:
    vectors = unit_vectors(subjects, DIM, seed)
    index = WatchlistIndex(DIM)
    index.add_watchlist(watchlist)
    for row, vector in enumerate(vectors, start=1):
        index.add_subject(watchlist, row, vector[None], expires_at=None)
    return index, vectors


def test_search_is_exact_against_brute_force() -> None:
    index, gallery = _gallery(500, seed=1)
    probes = unit_vectors(20, DIM, seed=2)
    for probe in probes:
        outcome = index.search(probe, ["wanted"], top_k=5, threshold=-1.0, now=time.time())
        expected = np.argsort(-(gallery @ probe))[:5] + 1
        assert [hit.row for hit in outcome.hits] == expected.tolist()
        assert outcome.hits[0].score == pytest.approx(float(np.max(gallery @ probe)), abs=1e-5)
        assert outcome.searched == 500


def test_a_subject_is_scored_by_its_best_template_and_listed_once() -> None:
    index, gallery = _gallery(50, seed=3)
    probe = gallery[9]
    crowd = unit_vectors(12, DIM, seed=4) * 0.2 + probe
    index.add_subject("wanted", 1000, crowd / np.linalg.norm(crowd, axis=1, keepdims=True), expires_at=None)
    outcome = index.search(probe, ["wanted"], top_k=3, threshold=-1.0, now=time.time())
    rows = [hit.row for hit in outcome.hits]
    assert rows[:2] == [10, 1000] and len(set(rows)) == 3


def test_threshold_and_watchlist_choice() -> None:
    index, gallery = _gallery(30, seed=5, watchlist="wanted")
    index.add_watchlist("partner")
    index.add_subject("partner", 500, gallery[3][None], expires_at=None)
    both = index.search(gallery[3], ["wanted", "partner"], top_k=5, threshold=0.9, now=time.time())
    assert sorted((hit.watchlist, hit.row) for hit in both.hits) == [("partner", 500), ("wanted", 4)]
    only = index.search(gallery[3], ["partner"], top_k=5, threshold=0.9, now=time.time())
    assert [(hit.watchlist, hit.row) for hit in only.hits] == [("partner", 500)] and only.searched == 1


def test_expired_subjects_are_skipped_then_swept() -> None:
    index, gallery = _gallery(10, seed=6)
    now = time.time()
    index.add_subject("wanted", 77, gallery[0][None], expires_at=now - 1)
    outcome = index.search(gallery[0], ["wanted"], top_k=2, threshold=-1.0, now=now)
    assert 77 not in {hit.row for hit in outcome.hits} and len(outcome.hits) == 2 and outcome.expired_skipped == 1
    assert index.sweep(now) == 1 and index.size() == 10
    assert not np.any(index.keys()["wanted"] >> TEMPLATE_BITS == 77)


def test_removal_takes_every_template_of_the_subject() -> None:
    index, gallery = _gallery(10, seed=7)
    index.add_subject("wanted", 42, unit_vectors(3, DIM, seed=8), expires_at=None)
    index.remove_subject("wanted", 42, 3)
    assert index.size() == 10 and not np.any(index.keys()["wanted"] >> TEMPLATE_BITS == 42)


def test_template_ids_carry_the_subject_row() -> None:
    ids = template_ids(np.array([5, 5, 9]), np.array([0, 1, 0]))
    assert (ids >> TEMPLATE_BITS).tolist() == [5, 5, 9] and len(set(ids.tolist())) == 3


def test_a_snapshot_loads_only_with_its_own_tag(tmp_path: Path) -> None:
    index, gallery = _gallery(100, seed=9)
    index.add_watchlist("empty")
    path = tmp_path / "index.snapshot"
    index.save(path, TAG)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = WatchlistIndex.load(path, TAG)
    assert loaded is not None and loaded.watchlists() == ["empty", "wanted"]
    assert all(np.array_equal(loaded.keys()[n], index.keys()[n]) for n in ("wanted", "empty"))
    now = time.time()
    assert loaded.search(gallery[5], ["wanted"], 3, -1.0, now) == index.search(gallery[5], ["wanted"], 3, -1.0, now)
    for other in (
        SnapshotTag(TAG.store_id, TAG.change_seq + 1, TAG.model_id, DIM),
        SnapshotTag("b" * 32, TAG.change_seq, TAG.model_id, DIM),
        SnapshotTag(TAG.store_id, TAG.change_seq, "faceplugin-feature-512:84fd65a16b57", DIM),
    ):
        assert WatchlistIndex.load(path, other) is None
    assert WatchlistIndex.load(tmp_path / "absent", TAG) is None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert WatchlistIndex.load(path, TAG) is None
    path.write_bytes(data[:200] + b"\x00" * 64 + data[264:])
    assert WatchlistIndex.load(path, TAG) is None


def test_searches_see_all_or_none_of_a_subject_while_it_changes() -> None:
    """Each subject added has two templates: a random one first, then the probe
    itself. A search that ever saw the first without the second would return
    that subject with a low score; every returned score must be 1."""
    index, _ = _gallery(0, seed=10)
    probe = unit_vectors(1, DIM, seed=11)[0]
    decoys = unit_vectors(400, DIM, seed=12)
    stop = threading.Event()
    failures: list[str] = []

    def search() -> None:
        while not stop.is_set():
            outcome = index.search(probe, ["wanted"], top_k=50, threshold=-1.0, now=time.time())
            low = [hit.score for hit in outcome.hits if hit.score < 0.999]
            if low:
                failures.append(f"partial subject seen: scores {low[:3]}")

    readers = [threading.Thread(target=search) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for row, decoy in enumerate(decoys, start=1):
            index.add_subject("wanted", row, np.stack([decoy, probe]), expires_at=None)
            if row % 3 == 0:
                index.remove_subject("wanted", row - 1, 2)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert not failures, failures[:3]
    assert index.size() == 2 * (len(decoys) - len(decoys) // 3)
