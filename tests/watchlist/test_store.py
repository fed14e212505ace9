"""The SQLite store: durability settings, all-or-nothing subjects, the change sequence, one writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.watchlist.samples import unit_vectors
from verifier.errors import Reason, VerifierError
from verifier.templates import Template, TemplateSpec
from verifier.storage.faults import StoreError, StoreFailure, StoreMissing
from verifier.watchlist.store import SubjectEntry, WatchlistStore

MODEL = "mobilefacenet-192:bf17c63426dc"
SPEC = TemplateSpec(MODEL, 192)


def _templates(count: int, seed: int, model: str = MODEL) -> list[Template]:
    return [Template(model, v) for v in unit_vectors(count, 192, seed)]


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[WatchlistStore]:
    opened = WatchlistStore.create(tmp_path / "store.sqlite3", busy_timeout=5.0)
    opened.create_watchlist("wanted", "arrest warrants")
    yield opened
    opened.close()


def _entry(subject_id: str, watchlist: str = "wanted", expires: datetime | None = None) -> SubjectEntry:
    return SubjectEntry(watchlist, subject_id, "warrant", "police", f"case-{subject_id}", expires)


def test_wal_and_full_sync_so_a_commit_is_on_disk(store: WatchlistStore) -> None:
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._writer is not None
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_subject_round_trips_with_its_templates(store: WatchlistStore) -> None:
    templates = _templates(3, seed=1)
    expires = datetime.now(UTC) + timedelta(days=30)
    added = store.add_subject(_entry("S-1", expires=expires), templates)
    got = store.subject("wanted", "S-1")
    assert got == added
    assert got.template_count == 3 and got.model_ids == (MODEL,)
    assert got.entry.expires_at is not None and abs((got.entry.expires_at - expires).total_seconds()) < 1e-3
    assert all(np.array_equal(a.vector, b.vector) for a, b in zip(store.templates_of(got.row), templates))
    assert store.watchlist("wanted").subjects == 1 and store.watchlist("wanted").templates == 3


def test_every_committed_write_and_only_those_bump_the_change_sequence(store: WatchlistStore) -> None:
    start = store.change_seq()
    store.add_subject(_entry("S-1"), _templates(1, seed=1))
    assert store.change_seq() == start + 1
    with pytest.raises(VerifierError) as refused:
        store.add_subject(_entry("S-1"), _templates(2, seed=2))
    assert refused.value.reason is Reason.SUBJECT_EXISTS
    with pytest.raises(VerifierError) as refused:
        store.add_subject(_entry("S-2", watchlist="nowhere"), _templates(1, seed=3))
    assert refused.value.reason is Reason.WATCHLIST_NOT_FOUND
    with pytest.raises(VerifierError) as refused:
        store.create_watchlist("wanted", "again")
    assert refused.value.reason is Reason.WATCHLIST_EXISTS
    assert store.change_seq() == start + 1
    assert store.subject("wanted", "S-1").template_count == 1
    store.remove_subject("wanted", "S-1")
    assert store.change_seq() == start + 2


def test_removal_takes_the_templates_and_rows_are_never_reused(store: WatchlistStore) -> None:
    first = store.add_subject(_entry("S-1"), _templates(2, seed=1))
    removed = store.remove_subject("wanted", "S-1")
    assert removed.row == first.row and removed.template_count == 2
    assert store.templates_of(first.row) == [] and store.template_models() == {}
    with pytest.raises(VerifierError) as refused:
        store.subject("wanted", "S-1")
    assert refused.value.reason is Reason.SUBJECT_NOT_FOUND
    again = store.add_subject(_entry("S-1"), _templates(1, seed=2))
    assert again.row > first.row


def test_searchable_leaves_out_expired_subjects_and_other_models(store: WatchlistStore) -> None:
    now = datetime.now(UTC)
    live = store.add_subject(_entry("live"), _templates(2, seed=1))
    store.add_subject(_entry("gone", expires=now - timedelta(seconds=1)), _templates(1, seed=2))
    store.add_subject(_entry("foreign"), _templates(1, seed=3, model="faceplugin-feature-512:84fd65a16b57"))
    store.create_watchlist("empty", "")
    found, quarantined = store.searchable(SPEC, now.timestamp())
    assert not quarantined
    assert set(found) == {"wanted", "empty"} and len(found["empty"].rows) == 0
    assert found["wanted"].rows.tolist() == [live.row, live.row]
    assert found["wanted"].positions.tolist() == [0, 1] and found["wanted"].vectors.shape == (2, 192)
    assert set(store.expiries()) == {store.subject("wanted", "gone").row}
    assert store.template_models() == {MODEL: 3, "faceplugin-feature-512:84fd65a16b57": 1}


def test_one_writer_process_and_readers_beside_it(store: WatchlistStore) -> None:
    with pytest.raises(StoreError, match="in use"):
        WatchlistStore.open(store.path, busy_timeout=1.0)
    store.add_subject(_entry("S-1"), _templates(1, seed=1))
    reader = WatchlistStore.open_readonly(store.path, busy_timeout=1.0)
    try:
        assert [s.entry.subject_id for s in reader.subjects("wanted")] == ["S-1"]
        assert reader.store_id == store.store_id and reader.change_seq() == store.change_seq()
        with pytest.raises(StoreError):
            reader.create_watchlist("other", "")
    finally:
        reader.close()


def test_a_closed_store_reopens_with_everything_committed(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    first = WatchlistStore.create(path, busy_timeout=5.0)
    first.create_watchlist("wanted", "")
    added = first.add_subject(_entry("S-1"), _templates(2, seed=1))
    identity, seq = first.store_id, first.change_seq()
    first.close()
    again = WatchlistStore.open(path, busy_timeout=5.0)
    try:
        assert again.store_id == identity and again.change_seq() == seq
        assert again.subject("wanted", "S-1") == added
    finally:
        again.close()
    with pytest.raises(StoreError, match="no watch-list store"):
        WatchlistStore.open_readonly(tmp_path / "absent.sqlite3", busy_timeout=1.0)


def test_a_store_is_created_once_and_never_by_opening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "store.sqlite3"
    with pytest.raises(StoreMissing, match="verifier watchlist init"):
        WatchlistStore.open(path, busy_timeout=1.0)
    assert not path.exists()
    WatchlistStore.create(path, busy_timeout=1.0).close()
    with pytest.raises(StoreError, match="exists"):
        WatchlistStore.create(path, busy_timeout=1.0)
    WatchlistStore.open(path, busy_timeout=1.0).close()


def test_files_and_folder_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "wl" / "store.sqlite3"
    store = WatchlistStore.create(path, busy_timeout=1.0)
    store.create_watchlist("wanted", "")
    store.close()
    assert path.parent.stat().st_mode & 0o777 == 0o700
    for name in ("store.sqlite3", "store.sqlite3.lock", "store.sqlite3-wal", "store.sqlite3-shm"):
        made = path.parent / name
        if made.exists():
            assert made.stat().st_mode & 0o777 == 0o600, name


def test_a_file_that_is_not_a_store_is_a_failure_not_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"this is no database " * 400)
    with pytest.raises(StoreFailure):
        WatchlistStore.open(path, busy_timeout=1.0)
    assert path.read_bytes().startswith(b"this is no database")


def test_delete_watchlist_refuses_a_non_empty_list_unless_forced(store: WatchlistStore) -> None:
    store.add_subject(_entry("S-1"), _templates(1, seed=1))
    with pytest.raises(VerifierError) as caught:
        store.delete_watchlist("wanted", force=False)
    assert caught.value.reason is Reason.WATCHLIST_NOT_EMPTY
    assert store.watchlist("wanted").subjects == 1
    gone = store.delete_watchlist("wanted", force=True)
    assert gone.subjects == 1 and store.watchlists() == [] and store.template_models() == {}
    with pytest.raises(VerifierError) as caught:
        store.delete_watchlist("wanted", force=True)
    assert caught.value.reason is Reason.WATCHLIST_NOT_FOUND


def test_an_unknown_list_is_named_as_such(store: WatchlistStore) -> None:
    for call in (store.subject, store.remove_subject):
        with pytest.raises(VerifierError) as caught:
            call("nowhere", "S-1")
        assert caught.value.reason is Reason.WATCHLIST_NOT_FOUND
    with pytest.raises(VerifierError) as caught:
        store.subject("wanted", "S-1")
    assert caught.value.reason is Reason.SUBJECT_NOT_FOUND


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("UPDATE templates SET vector = zeroblob(40) WHERE subject = ?", "TEMPLATE_MALFORMED"),
        ("UPDATE templates SET vector = zeroblob(768) WHERE subject = ?", "TEMPLATE_MALFORMED"),
        ("UPDATE templates SET version = 7 WHERE subject = ?", "TEMPLATE_VERSION_UNSUPPORTED"),
        ("UPDATE templates SET vector = 'text, not bytes' WHERE subject = ?", "TEMPLATE_MALFORMED"),
    ],
)
def test_damaged_rows_are_quarantined_and_the_rest_is_searchable(
    store: WatchlistStore, damage: str, reason: str
) -> None:
    good = store.add_subject(_entry("good"), _templates(2, seed=1))
    bad = store.add_subject(_entry("bad"), _templates(1, seed=2))
    with sqlite3.connect(store.path) as other:
        other.execute(damage, (bad.row,))
    found, quarantined = store.searchable(SPEC, datetime.now(UTC).timestamp())
    assert found["wanted"].rows.tolist() == [good.row, good.row]
    assert [(q.subject_id, q.position, q.reason) for q in quarantined] == [("bad", 0, reason)]
    assert store.quarantined(SPEC) == quarantined


def test_damaged_text_still_reads(store: WatchlistStore) -> None:
    added = store.add_subject(_entry("S-1"), _templates(1, seed=1))
    with sqlite3.connect(store.path) as other:
        other.execute("UPDATE subjects SET reason = CAST(x'fffe41' AS TEXT) WHERE id = ?", (added.row,))
    assert store.subjects_by_row([added.row])[added.row].entry.reason.endswith("A")


def test_the_searchable_scan_in_many_steps_keeps_every_list_apart(
    store: WatchlistStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild reads the store in steps and checks each as a block: with steps
    of three rows, two lists enrolled in turn, an expired subject, another model's
    templates and damaged rows in the middle of steps, every list gets exactly
    its live, sound templates in row order, and each damaged row is named once."""
    monkeypatch.setattr("verifier.watchlist.scan._SCAN_ROWS", 3)
    store.create_watchlist("other", "")
    past = datetime.now(UTC) - timedelta(days=1)
    expected: dict[str, list[tuple[int, int, np.ndarray]]] = {"wanted": [], "other": []}
    damaged = []
    for number in range(12):
        watchlist = "wanted" if number % 2 else "other"
        templates = _templates(2, seed=number)
        added = store.add_subject(_entry(f"S-{number}", watchlist, past if number == 5 else None), templates)
        if number == 7:
            store.add_subject(_entry("old-model", watchlist), _templates(1, seed=99, model="another:1"))
        if number in (4, 9):
            damaged.append((added.row, 1))
            expected[watchlist].append((added.row, 0, templates[0].vector))
        elif number != 5:
            expected[watchlist].extend((added.row, p, t.vector) for p, t in enumerate(templates))
    with sqlite3.connect(store.path) as other:
        other.execute("UPDATE templates SET vector = zeroblob(768) WHERE subject = ? AND position = 1", (damaged[0][0],))
        other.execute("UPDATE templates SET version = 2 WHERE subject = ? AND position = 1", (damaged[1][0],))
    found, quarantined = store.searchable(SPEC, datetime.now(UTC).timestamp())
    for name, want in expected.items():
        assert found[name].rows.tolist() == [row for row, _, _ in want]
        assert found[name].positions.tolist() == [position for _, position, _ in want]
        assert np.array_equal(found[name].vectors, np.stack([vector for _, _, vector in want]))
    assert [(q.row, q.position, q.reason) for q in quarantined] == [
        (damaged[0][0], 1, "TEMPLATE_MALFORMED"), (damaged[1][0], 1, "TEMPLATE_VERSION_UNSUPPORTED")]
    assert store.quarantined(SPEC) == quarantined
    assert store.still_quarantined(SPEC, [(damaged[0][0], 1), (damaged[0][0], 0), (10_000, 0)]) == quarantined[:1]
