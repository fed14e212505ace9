"""Every data folder written before the storage layer (issue 25) opens with it.

data/6fc2990/ was written by the code as of commit 6fc2990 (tests/storage/old_store.py,
run from a worktree of that commit): watch-lists with subjects, templates and
images, a partner's list, registry travellers, a feed of 17 changes over two
epochs, and the watch-list index saved at the last change. Opened with this
code it holds the same, takes new changes on the same feed, serves
identification from the old index file, and its feed replays onto a new store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.storage.old_store import holdings
from tests.watchlist.samples import local_settings
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.registry.store import RegistryStore
from verifier.watchlist.service import WatchlistService
from verifier.watchlist.store import SCHEMA_VERSION, WatchlistStore

OLD = Path(__file__).parent / "data" / "6fc2990"


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """A copy of the old data folder: opening it for writing upgrades it in place."""
    shutil.copytree(OLD / "watchlist", tmp_path / "watchlist")
    return tmp_path


@pytest.fixture(scope="module")
def expected() -> dict:
    found = json.loads((OLD / "expected.json").read_text())
    assert found.pop("written_by") == "6fc2990"
    return found


def test_an_old_store_opens_for_writing_with_all_it_held(data: Path, expected: dict) -> None:
    store = WatchlistStore.open(data / "watchlist" / "store.sqlite3", 5.0)
    try:
        assert holdings(store, RegistryStore(store)) == expected
        assert store._meta("schema_version") == SCHEMA_VERSION
        store.create_watchlist("after", "")
        assert store.position().seq == expected["change_seq"] + 1 and store.position().epoch == 2
        assert [c.kind for c in store.changes_since(expected["change_seq"], 10)] == ["create_watchlist"]
    finally:
        store.close()
    reader = WatchlistStore.open_readonly(data / "watchlist" / "store.sqlite3", 5.0)
    try:
        assert [w.name for w in reader.watchlists()] == ["AGENCY:L", "after", "missing", "wanted"]
    finally:
        reader.close()


def test_an_old_feed_replays_onto_a_new_store(data: Path, expected: dict, tmp_path: Path) -> None:
    old = WatchlistStore.open(data / "watchlist" / "store.sqlite3", 5.0)
    replica = WatchlistStore.create(tmp_path / "replica" / "store.sqlite3", 5.0)
    try:
        registry = RegistryStore(replica)
        for change in old.changes_since(0, 1000):
            assert replica.apply_change(change) is not None
        copied = holdings(replica, registry)
        assert copied.pop("store_id") != expected["store_id"]
        assert copied == {key: value for key, value in expected.items() if key != "store_id"}
    finally:
        old.close()
        replica.close()


def test_an_old_data_folder_serves_identification_from_its_saved_index(
    data: Path, expected: dict, settings: Settings, engine: FaceEngine
) -> None:
    assert engine.model_id == "sface-128:cad24c894a9c", "the fixture's templates are of the default pack's embedder"
    service = WatchlistService.open(local_settings(settings, data), engine)
    try:
        assert service.load().source == "snapshot"
        assert service.consistency().agrees
        for name, subject_id in (("wanted", "W-1"), ("missing", "M-1"), ("AGENCY:L", "P-0")):
            subject = service.subject(name, subject_id)
            probe = service.store.templates_of(subject.row)[0]
            found = service.identify(probe, [name])
            assert [c.subject.entry.subject_id for c in found.candidates][:1] == [subject_id]
    finally:
        service.close()
