"""Writes a data folder with the code of an earlier version, for the upgrade test.

Run it with that version's package first on the path, from a worktree of it
(the fixture in data/6fc2990/ was made so, from the version before the
storage layer, issue 25):

    git worktree add --detach /tmp/old 6fc2990
    PYTHONPATH=/tmp/old .venv/bin/python tests/storage/old_store.py tests/storage/data/6fc2990

It keeps to calls that version has: watch-lists with subjects, templates and
enrolment images, a removal, templates replaced, a partner's list, a new
epoch, and registry travellers registered, updated, used and erased, every one
a change on the feed; and the watch-list index saved at the store's last
change, as a server leaves it at shutdown. Beside them it writes
expected.json: what that version reads back (listings, the sha256 of every
stored vector and image, the feed's changes; :func:`holdings`, which the test
reads the upgraded store with), for the new version to find again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import verifier
from verifier.registry.store import RegistryStore
from verifier.templates import Template, TemplateSpec
from verifier.watchlist.store import StoredImage, SubjectEntry, WatchlistStore

# The default pack's embedder when the fixture was made: its templates are searchable by the test's engine.
MODEL_ID = "sface-128:cad24c894a9c"
DIMENSION = 128


def _templates(count: int, seed: int) -> list[Template]:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION)).astype(np.float32)
    return [Template(MODEL_ID, v / np.linalg.norm(v)) for v in vectors]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(folder: Path) -> dict:
    """Make the store in ``folder`` and return what it holds, as read back."""
    # Names of that version only (later versions moved them): imported where written.
    from verifier.watchlist.index import SnapshotTag, WatchlistIndex, template_ids
    from verifier.watchlist.store import subject_record

    path = folder / "watchlist" / "store.sqlite3"
    store = WatchlistStore.create(path, 5.0)
    try:
        store.create_watchlist("wanted", "wanted persons")
        store.create_watchlist("missing", "missing persons")
        expires = datetime(2100, 1, 1, tzinfo=UTC)
        for i in range(4):
            entry = SubjectEntry("wanted", f"W-{i}", "warrant", "police", f"case-{i}", expires if i == 3 else None)
            store.add_subject(entry, _templates(2, seed=i), {0: f"photo {i} a".encode(), 1: f"photo {i} b".encode()})
        store.add_subject(SubjectEntry("missing", "M-1", "missing", "police"), _templates(1, seed=10))
        store.remove_subject("wanted", "W-2")
        row = store.subject("wanted", "W-1").row
        store.replace_templates(row, dict(enumerate(_templates(2, seed=20))))
        provenance = {"issuer": "AGENCY", "key_id": "k1", "sequence": 7, "created_at": 1.7e9,
                      "expires_at": 4.1e9, "model_id": MODEL_ID}
        partner = [subject_record(SubjectEntry("AGENCY:L", f"P-{i}", "alert", "AGENCY"), 1.7e9,
                                  _templates(1, seed=30 + i), [StoredImage.of(0, f"partner {i}".encode())])
                   for i in range(2)]
        store.replace_partner_list("AGENCY:L", "a partner's list", provenance, partner)
        registry = RegistryStore(store)
        for i in range(3):
            registry.register(f"T-{i}", f"document-{i}", 1.7e9, "gate-1", "v1", _templates(2, seed=40 + i))
        registry.update("T-0", _templates(2, seed=50), None)
        registry.touch({registry.traveller("T-1").row: 1.8e9})
        registry.erase("T-2")
        store.new_epoch()
        lists, left_out = store.searchable(TemplateSpec(MODEL_ID, DIMENSION), time.time())
        index = WatchlistIndex.build(
            DIMENSION, {name: (template_ids(found.rows, found.positions), found.vectors) for name, found in lists.items()})
        index.save(folder / "watchlist" / "index.snapshot",
                   SnapshotTag(store.store_id, store.change_seq(), MODEL_ID, DIMENSION))
        assert not left_out
        return holdings(store, registry)
    finally:
        store.close()


def holdings(store: WatchlistStore, registry: RegistryStore) -> dict:
    """What a store holds, as its version reads it: the same calls in every version since."""
    lists = {}
    for found in store.watchlists():
        subjects = {}
        for subject in store.subjects(found.name):
            subjects[subject.entry.subject_id] = {
                "row": subject.row, "external_ref": subject.entry.external_ref,
                "expires_at": None if subject.entry.expires_at is None else subject.entry.expires_at.timestamp(),
                "templates": [_digest(t.to_bytes()) for t in store.templates_of(subject.row)],
                "images": [image.sha256 for image in store.images_of(subject.row) if image.intact],
            }
        lists[found.name] = {"description": found.description, "subjects": subjects}
    provenance = store.provenance(sorted(lists))
    travellers = {}
    for traveller_id in ("T-0", "T-1"):
        found = registry.traveller(traveller_id)
        travellers[traveller_id] = {"row": found.row, "last_used_at": found.last_used_at,
                                    "templates": [_digest(t.to_bytes()) for t in found.templates]}
    position = store.position()
    return {
        "store_id": store.store_id, "change_seq": store.change_seq(),
        "position": {"seq": position.seq, "epoch": position.epoch, "last_epoch": position.last_epoch},
        "watchlists": lists,
        "partner_issuers": {name: p.issuer for name, p in provenance.items()},
        "travellers": travellers, "traveller_count": registry.count(),
        "changes": [[c.seq, c.epoch, c.kind, _digest(c.payload)] for c in store.changes_since(0, 1000)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder
    if folder.exists():
        shutil.rmtree(folder)
    held = write(folder)
    for leftover in (folder / "watchlist").glob("store.sqlite3?*"):
        leftover.unlink()  # the lock file (and nothing else: the log is checkpointed away at close)
    source = Path(verifier.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    (folder / "expected.json").write_text(json.dumps({**held, "written_by": commit}, indent=1, sort_keys=True) + "\n")
    print(f"written by {source} at {commit}: {held['change_seq']} changes", file=sys.stderr)


if __name__ == "__main__":
    main()
