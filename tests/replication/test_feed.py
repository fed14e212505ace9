"""The change feed in the store, on real SQLite: one row per change in the
change's own transaction, gap-free; replay idempotent, gaps and old epochs
refused with nothing applied; the primary's checks of a follower's standing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.watchlist.samples import templates_of
from verifier.config import ReplicationSettings
from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.replication.feed import Feed
from verifier.watchlist.service import WatchlistService
from verifier.storage.faults import StoreError
from verifier.storage.feed import Change, FeedGap
from verifier.watchlist.store import SubjectEntry, WatchlistStore


def _store(path: Path) -> WatchlistStore:
    return WatchlistStore.create(path / "store.sqlite3", 5.0)


def _fill(store: WatchlistStore, engine: FaceEngine) -> None:
    store.create_watchlist("wanted", "")
    for i in range(5):
        store.add_subject(SubjectEntry("wanted", f"S{i}", "r", "agency"), templates_of(engine, 2, seed=i))
    store.remove_subject("wanted", "S2")


def test_every_change_is_on_the_feed_gap_free(tmp_path: Path, engine: FaceEngine) -> None:
    store = _store(tmp_path)
    _fill(store, engine)
    changes = store.changes_since(0, 100)
    assert [c.seq for c in changes] == list(range(1, 8)) and store.change_seq() == 7
    assert [c.kind for c in changes] == ["create_watchlist", *["add_subject"] * 5, "remove_subject"]
    assert {c.epoch for c in changes} == {1}
    with pytest.raises(VerifierError):
        store.add_subject(SubjectEntry("wanted", "S1", "r", "agency"), templates_of(engine, 1, seed=9))
    assert store.change_seq() == 7 and len(store.changes_since(0, 100)) == 7  # a refused write is no change


def test_a_counted_transaction_without_its_change_is_rolled_back(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(StoreError, match="change feed"):
        with store._transaction() as conn:
            conn.execute("INSERT INTO watchlists (name, description, created_at) VALUES ('x', '', 0)")
    assert store.watchlists() == [] and store.change_seq() == 0


def test_replay_is_idempotent_and_refuses_gaps_and_old_epochs(tmp_path: Path, engine: FaceEngine) -> None:
    primary = _store(tmp_path / "a")
    _fill(primary, engine)
    (tmp_path / "b").mkdir()
    primary.backup_to(tmp_path / "b" / "start.sqlite3")  # a snapshot at change 7 ...
    replica = WatchlistStore.open(tmp_path / "b" / "start.sqlite3", 5.0)
    primary_s9_row = primary.add_subject(SubjectEntry("wanted", "S9", "r", "agency"), templates_of(engine, 1, seed=9)).row
    primary.new_epoch()
    primary.remove_subject("wanted", "S9")
    later = primary.changes_since(7, 10)
    assert [c.seq for c in later] == [8, 9, 10] and [c.epoch for c in later] == [1, 2, 2]
    with pytest.raises(FeedGap):
        replica.apply_change(later[1])
    applied = replica.apply_change(later[0])
    assert applied is not None and [a[1] for a in applied.added] == ["wanted"]
    assert replica.apply_change(later[0]) is None  # twice: a no-op
    assert replica.change_seq() == 8 and replica.subject("wanted", "S9").template_count == 1
    s9_row = applied.added[0][0]
    for change in later[1:]:
        replica.apply_change(change)
    assert replica.changes_since(0, 100) == primary.changes_since(0, 100)
    assert replica.position().epoch == 2 and s9_row == primary_s9_row  # the primary's row, kept on the replica
    old = Change(11, 1, "create_watchlist", b'{"created_at":0,"description":"","name":"fork"}', 0.0)
    with pytest.raises(VerifierError) as refused:
        replica.apply_change(old)
    assert refused.value.reason is Reason.STALE_EPOCH
    assert replica.change_seq() == 10 and [w.name for w in replica.watchlists()] == ["wanted"]


def test_the_primary_refuses_diverged_and_newer_epoch_followers(
    tmp_path: Path, settings, engine: FaceEngine  # noqa: ANN001 - the session settings fixture
) -> None:
    from tests.watchlist.samples import local_settings

    service = WatchlistService.open(local_settings(settings, tmp_path), engine)
    service.load()
    try:
        service.create_watchlist("wanted", "")
        feed = Feed(service, ReplicationSettings())
        store_id = service.store.store_id
        assert feed.admit(store_id, 2, 1, 1).seq == 1  # a follower at change 1, epoch 1: served
        for standing in [("another-store", 2, 1, 1), (store_id, 3, 1, 1), (store_id, 2, 1, 7)]:
            with pytest.raises(VerifierError) as diverged:
                feed.admit(*standing)
            assert diverged.value.reason is Reason.REPLICA_DIVERGED
        with pytest.raises(VerifierError) as stale:
            feed.admit(store_id, 2, 2, 1)  # the follower has seen epoch 2: this primary was replaced
        assert stale.value.reason is Reason.STALE_EPOCH
        with pytest.raises(VerifierError) as fenced:
            service.create_watchlist("fork", "")
        assert fenced.value.reason is Reason.STALE_EPOCH
        assert [w.name for w in service.watchlists()] == ["wanted"]
    finally:
        service.close()


def test_enrolment_images_and_migrated_templates_travel_on_the_feed(
    tmp_path: Path, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    """A replica gets a subject's enrolment images with it (they are the record a
    model change re-extracts from), and a migration's new templates."""
    primary = _store(tmp_path / "a")
    primary.create_watchlist("wanted", "")
    (tmp_path / "b").mkdir()
    primary.backup_to(tmp_path / "b" / "start.sqlite3")
    replica = WatchlistStore.open(tmp_path / "b" / "start.sqlite3", 5.0)
    image = photos["obama.jpg"].read_bytes()
    added = primary.add_subject(SubjectEntry("wanted", "S1", "r", "agency"), templates_of(engine, 1, seed=1), {0: image})
    migrated = templates_of(engine, 1, seed=2)[0]
    primary.replace_templates(added.row, {0: migrated})
    for change in primary.changes_since(1, 10):
        replica.apply_change(change)
    assert [i.data for i in replica.images_of(added.row)] == [image]
    assert [i.sha256 for i in replica.images_of(added.row)] == [i.sha256 for i in primary.images_of(added.row)]
    (copied,) = replica.templates_of(added.row)
    assert np.array_equal(copied.vector, migrated.vector)
    assert replica.change_seq() == primary.change_seq() == 3
