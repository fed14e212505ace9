"""A store open for writing notices when its files are no longer the files at
their paths (moved, removed, replaced, rewritten in place): reads and writes are
refused (StoreMissing) and a write is rolled back, never committed into a file
that is no longer the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from verifier.storage.faults import StoreMissing
from verifier.watchlist.store import WatchlistStore

SIDE_FILES = ("", "-wal", "-shm")


def _move(source: Path, target: Path) -> None:
    for suffix in SIDE_FILES:
        Path(f"{source}{suffix}").rename(Path(f"{target}{suffix}"))


def test_a_write_into_a_moved_store_is_rolled_back_and_reads_are_refused(tmp_path: Path) -> None:
    path, aside = tmp_path / "store.sqlite3", tmp_path / "aside.sqlite3"
    store = WatchlistStore.create(path, busy_timeout=5.0)
    store.create_watchlist("kept", "")
    store.check_identity(deep=True)
    _move(path, aside)
    with pytest.raises(StoreMissing, match="no longer the file this server opened"):
        store.create_watchlist("lost", "")
    with pytest.raises(StoreMissing):
        store.watchlists()
    store.close()  # abandons its connections: the log is not checkpointed or deleted by name
    _move(aside, path)
    reopened = WatchlistStore.open(path, busy_timeout=5.0)
    try:
        assert [w.name for w in reopened.watchlists()] == ["kept"]
        assert reopened.change_seq() == 1
    finally:
        reopened.close()


def test_a_removed_log_is_found_before_a_write_is_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = WatchlistStore.create(path, busy_timeout=5.0)
    Path(f"{path}-wal").unlink()
    with pytest.raises(StoreMissing, match="-wal"):
        store.create_watchlist("lost", "")
    store.close()


def test_a_store_rewritten_in_place_is_found_by_its_id(tmp_path: Path) -> None:
    path, other = tmp_path / "store.sqlite3", tmp_path / "other.sqlite3"
    store = WatchlistStore.create(path, busy_timeout=5.0)
    WatchlistStore.create(other, busy_timeout=5.0).close()
    assert store.checkpoint()
    shutil.copyfile(other, path)  # the same inode, another store's bytes
    store.check_identity()  # every file is still the one opened...
    with pytest.raises(StoreMissing, match="store id"):
        store.check_identity(deep=True)  # ...but the database at the path is another store
    store.close()
