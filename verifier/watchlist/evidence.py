"""Whether a watch-list store existed where there is none now.

An empty store that serves clears every wanted person at once, so a store
that once existed is never silently made again: ``verifier watchlist init``
(and ``make run``'s ``init --first-run``) creates one only where nothing says
there was one. The evidence looked for:

* the marker ``init`` leaves for each store it makes, outside the store's
  folder (``watchlist.markers_path``, ``data/.stores/`` by default: one
  owner-only JSON file per store path, with the store's id), so that
  ``rm -rf data/watchlist`` leaves it behind;
* an audit trail that records changes made to a store (any change applied,
  ``OK``, other than the beginning of a trail);
* the registry's document key (the registry's tables live in the store);
* replication and index state: a saved watch-list or registry index (tagged
  with the store id it was saved from), a snapshot being received, a store
  set aside after divergence, or the store's folder itself.

A store is then either restored from backup or begun afresh on purpose with
``verifier watchlist init --start-afresh --reason TEXT``, recorded on the
audit trail with the evidence it overrode.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from verifier.config import Settings
from verifier.security.files import write_private
from verifier.watchlist.index import snapshot_tag

@dataclass(frozen=True)
class Marker:
    """What ``init`` remembers of a store it made (or found at a first run)."""

    store_id: str
    path: str
    recorded_at: str
    recorded_by: str


def marker_file(settings: Settings) -> Path:
    """The configured store's marker: named by a hash of the store's absolute path."""
    store = settings.watchlist.store_file(settings.data_dir).resolve()
    name = hashlib.sha256(str(store).encode()).hexdigest()[:24]
    return settings.watchlist.markers_folder(settings.data_dir) / f"{name}.json"


def remember(settings: Settings, store_id: str) -> Path:
    """Record (durably, owner-only) that the configured store exists with ``store_id``."""
    path = marker_file(settings)
    marker = Marker(store_id, str(settings.watchlist.store_file(settings.data_dir).resolve()),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), getpass.getuser())
    write_private(path, [json.dumps(asdict(marker)).encode()])
    os.chmod(path.parent, 0o700)
    return path


def recalled(settings: Settings) -> Marker | None:
    """The configured store's marker, if any; one that cannot be read is still a marker."""
    path = marker_file(settings)
    if not path.exists():
        return None
    try:
        return Marker(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        return Marker("(unreadable)", str(path), f"({exc})", "")


def _trail_changes(trail: Path) -> str | None:
    """What the audit trail says was changed in a store, in words; None if nothing."""
    try:
        db = sqlite3.connect(f"file:{trail}?mode=ro", uri=True)
        try:
            count, last = db.execute(
                "SELECT COUNT(*), MAX(time) FROM records WHERE kind = 'change' AND outcome = 'OK'"
                " AND rpc != 'cli:audit begin'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"the audit trail {trail} exists but cannot be read ({exc})"
    if not count:
        return None
    return (f"the audit trail {trail} records {count} change{'s' if count > 1 else ''} applied to a store, "
            f"the last at {last}")


def evidence(settings: Settings) -> list[str]:
    """Each sign that the configured store existed, in words (none: a first run)."""
    data = settings.data_dir
    store = settings.watchlist.store_file(data)
    found = []
    marker = recalled(settings)
    if marker is not None:
        found.append(f"{marker_file(settings)} records store {marker.store_id} at {marker.path} "
                     f"({marker.recorded_at})")
    trail = settings.audit.file(data)
    if trail.exists() and (changes := _trail_changes(trail)) is not None:
        found.append(changes)
    key = settings.registry.key_file(data)
    if key.exists():
        found.append(f"the registry's document key {key} exists (the registry's tables live in the store)")
    for kind, index in (("watch-list", settings.watchlist.snapshot_file(data)),
                        ("registry", settings.registry.snapshot_file(data))):
        if index is not None and index.exists():
            tag = snapshot_tag(index) if kind == "watch-list" else None
            of = f" of store {tag.store_id} at change {tag.change_seq}" if tag is not None else ""
            found.append(f"the saved {kind} index {index}{of} exists")
    if store.parent.is_dir():
        left = sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name))
        found.append(f"the store's folder {store.parent} exists" + (f", holding {', '.join(left)}" if left else ""))
    return found


def set_aside_leftovers(store: Path) -> list[Path]:
    """Rename what the old store left beside its path (its WAL, shared memory or
    journal, which SQLite would apply to a new file at that path) out of the way;
    returns the new names. Nothing is deleted."""
    moved = []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for suffix in ("-wal", "-shm", "-journal"):
        left = Path(f"{store}{suffix}")
        if left.exists():
            aside = Path(f"{store}.before-afresh-{stamp}{suffix}")
            os.replace(left, aside)
            moved.append(aside)
    return moved


def refusal(settings: Settings, found: list[str]) -> str:
    """Why no store is made, and the two ways on."""
    store = settings.watchlist.store_file(settings.data_dir)
    lines = [f"refused: a watch-list store existed at {store} and is gone; an empty one would clear every "
             "wanted person. Evidence:"]
    lines += [f"  - {item}" for item in found]
    lines += [
        "Restore it: copy the store from your backup (or from a replica's data folder) to "
        f"{store} (owner-only), with its -wal file if the backup has one; a running server picks it up within "
        "watchlist.store_retry_seconds.",
        "Or start afresh on purpose, with an empty store: `verifier watchlist init --start-afresh --reason TEXT` "
        "(recorded on the audit trail, with this evidence).",
    ]
    return "\n".join(lines)
