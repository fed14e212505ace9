"""The watch-list store: SQLite in WAL mode, the source of truth.

Every write is one transaction, committed with ``synchronous=FULL`` before the
call returns: an acknowledged enrolment survives a killed process or a power
cut, and a subject is stored with all its templates or not at all. Each commit
bumps a change sequence number; a saved search index records the number it was
built at and is trusted only while the store has not moved on.

One process writes a store (it holds an exclusive lock on a file beside it, so
two servers cannot each keep their own index of one store); other processes
may open it read-only, for export and statistics.

A store is created only by an explicit step (:meth:`WatchlistStore.create`,
``verifier watchlist init``): opening one that is missing is an error, never a
new empty store, since an empty watch-list would silently clear every
traveller. Any SQLite failure at run time (disk full, read-only, corrupt)
surfaces as :class:`StoreFailure`, so that the service above can stop serving
watch-lists with a reason while the rest of the server goes on. Files are
created owner-only (0600, directories 0700): they hold biometric templates.

A store open for writing is watched: the files it opened (the database, its
write-ahead log and shared memory, its lock) must still be the files at their
paths, and the database at the path must still hold the store id it was
opened with (:meth:`WatchlistStore.check_identity`). A store deleted, moved or
replaced under a running process is otherwise written on, through the open
descriptors, into files no one will open again: every write checks before it
commits and again before it is acknowledged, every read checks before it
answers, and the service above checks every second. A store found not to be
itself is :class:`StoreMissing`; its connections are then abandoned, never
closed, because closing the last one checkpoints and deletes the log *by
name*, which may by then be another store's.

Since schema 2 the store keeps each subject's enrolment images, as sent (with
their sha256 and size): they are the agency's record, and when the model
changes, templates are made again from them (``verifier watchlist migrate``).
A store of schema 1 is upgraded when first opened for writing (one
transaction: the images table is added; subjects enrolled before have none).

The change feed: every committed change (a transaction that bumps the change
sequence) also writes one row of ``changes`` in the same transaction: its
sequence number (global, gap-free: the sequence after the commit), the epoch
it was written in, its kind and a payload holding all that a replica needs to
apply it again (subjects with their templates, lists replaced whole). A
replica applies a change only when it is the next one (:meth:`apply_change`),
in one transaction that also records it, so applying twice is a no-op and a
gap is refused. The feed's tables are added to any store that lacks them when
it is opened for writing, whatever its ``schema_version`` (so the feed
composes with the schema migrations of the store itself); a transaction that
bumps the sequence without recording its change is rolled back.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress
from pathlib import Path

import numpy as np

from verifier.errors import Reason, VerifierError
from verifier.storage.faults import FileIdentity
from verifier.templates import NORM_TOLERANCE, TEMPLATE_VERSION, Template, TemplateSpec, problem_with
from verifier.validation import moment

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
CREATE TABLE IF NOT EXISTS watchlists (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS subjects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    watchlist TEXT NOT NULL REFERENCES watchlists(name),
    subject_id TEXT NOT NULL,
    external_ref TEXT NOT NULL,
    reason TEXT NOT NULL,
    source_agency TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    UNIQUE (watchlist, subject_id)
);
CREATE TABLE IF NOT EXISTS templates (
    subject INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (subject, position)
) WITHOUT ROWID;
"""

# Schema 2: the enrolment images, one row per image a template was made from,
# at the position of that template when enrolled.
_IMAGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    subject INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (subject, position)
);
"""

# The change feed (see the module docstring), and the partner lists imported
# from signed bundles: where each came from, and the last bundle sequence
# accepted from each issuer (a replayed bundle is refused). Added by
# :func:`_ensure_feed`, independently of ``schema_version``.
_FEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    committed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS partner_lists (
    watchlist TEXT PRIMARY KEY REFERENCES watchlists(name) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    model_id TEXT NOT NULL,
    imported_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS partner_sequences (issuer TEXT PRIMARY KEY, sequence INTEGER NOT NULL);
"""

# Kinds of change on the feed. A new kind of change (the traveller registry,
# say) joins the feed by adding its kind here and its replay to
# :func:`_replay`: sequence, epoch, transport and the follower are shared.
CREATE_WATCHLIST = "create_watchlist"
DELETE_WATCHLIST = "delete_watchlist"
ADD_SUBJECT = "add_subject"
REMOVE_SUBJECT = "remove_subject"
REPLACE_PARTNER_LIST = "replace_partner_list"
REPLACE_TEMPLATES = "replace_templates"
NEW_EPOCH = "new_epoch"
# The traveller registry's changes (verifier.registry.store replays them: it
# registers its replay with :func:`register_change_kind` when imported).
REGISTER_TRAVELLER = "register_traveller"
UPDATE_TRAVELLER = "update_traveller"
ERASE_TRAVELLER = "erase_traveller"
TOUCH_TRAVELLER = "touch_traveller"

_SUBJECT_COLUMNS = (
    "s.id, s.watchlist, s.subject_id, s.external_ref, s.reason, s.source_agency, s.created_at, s.expires_at, "
    "(SELECT COUNT(*) FROM templates t WHERE t.subject = s.id), "
    "(SELECT GROUP_CONCAT(DISTINCT t.model_id) FROM templates t WHERE t.subject = s.id), "
    "(SELECT COUNT(*) FROM images i WHERE i.subject = s.id)"
)


FILE_MODE = 0o600
DIRECTORY_MODE = 0o700

# The files beside the database that SQLite keeps open while a store is open:
# a write into any of them, once it is no longer the file at its path, is lost.
_OPEN_FILES = ("", "-wal", "-shm")
# Connections of stores found replaced or removed: kept referenced (never
# closed, never collected, which would close them) until the process ends.
_ABANDONED: list[sqlite3.Connection] = []


class StoreError(Exception):
    """The store cannot be used: of another schema, held by another process, or failing."""


class StoreMissing(StoreError):
    """No store where one is configured: it must be created (or restored) by an operator."""


class StoreFailure(StoreError):
    """SQLite failed underneath a read or write (disk full, read-only, I/O error, corruption)."""


class FeedGap(StoreError):
    """A change offered to a replica is not the next one it needs: nothing applied."""


@dataclass(frozen=True)
class Change:
    """One committed change, as the feed carries it: ``payload`` is canonical JSON."""

    seq: int
    epoch: int
    kind: str
    payload: bytes
    committed_at: float


@dataclass(frozen=True)
class Applied:
    """What applying a change did, for the index above the store to follow:
    lists created or dropped, subjects (row, list, vectors by model, expiry)
    added, and (row, list, template count) removed."""

    change: Change
    created: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    added: tuple[tuple[int, str, list[Template], float | None], ...] = ()
    removed: tuple[tuple[int, str, int], ...] = ()
    # Registry travellers whose templates changed: (row, the templates now
    # held, or None when erased), for the registry's index to follow.
    travellers: tuple[tuple[int, list[Template] | None], ...] = ()


@dataclass(frozen=True)
class FeedPosition:
    """Where a store stands in the feed: its last change and the epoch it is in.
    ``fenced_by`` is a newer epoch a follower has shown this store: it is no
    longer the primary and must not take writes."""

    store_id: str
    seq: int
    epoch: int
    last_epoch: int
    fenced_by: int


@dataclass(frozen=True)
class Provenance:
    """Where a partner's list came from: the signed bundle it was imported from."""

    issuer: str
    key_id: str
    sequence: int
    created_at: datetime
    expires_at: datetime
    model_id: str


@dataclass(frozen=True)
class Watchlist:
    name: str
    description: str
    created_at: datetime
    subjects: int = 0
    templates: int = 0


@dataclass(frozen=True)
class SubjectEntry:
    """What the enrolling agency says about a person; the subject id is theirs,
    unique within its watch-list."""

    watchlist: str
    subject_id: str
    reason: str
    source_agency: str
    external_ref: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Subject:
    """A stored subject. ``row`` is the store's own key: never reused, so a
    subject removed and enrolled again is a new row."""

    entry: SubjectEntry
    row: int
    created_at: datetime
    template_count: int
    model_ids: tuple[str, ...]
    # Enrolment images kept: 0 for a subject enrolled from templates alone (or
    # before schema 2), which cannot be migrated to another model.
    image_count: int = 0

    def expired(self, now: float) -> bool:
        return self.entry.expires_at is not None and self.entry.expires_at.timestamp() <= now


@dataclass(frozen=True)
class SearchableTemplates:
    """The live templates of one watch-list, ready for the index."""

    rows: np.ndarray
    positions: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class StoredImage:
    """An enrolment image as it was sent, with the sha256 and size it was stored with."""

    position: int
    sha256: str
    size: int
    data: bytes

    @classmethod
    def of(cls, position: int, data: bytes) -> "StoredImage":
        return cls(position, hashlib.sha256(data).hexdigest(), len(data), data)

    @property
    def intact(self) -> bool:
        """Whether the bytes still hash to what was stored: a damaged image is never re-extracted."""
        return len(self.data) == self.size and hashlib.sha256(self.data).hexdigest() == self.sha256


@dataclass(frozen=True)
class Unmigrated:
    """The subjects of one watch-list that have no template of the served model:
    ``rows`` of them all, and of those the ``without_images`` that cannot be
    migrated (enrolled from templates alone, or before images were kept)."""

    watchlist: str
    rows: frozenset[int]
    without_images: frozenset[int]


@dataclass(frozen=True)
class QuarantinedTemplate:
    """A stored template row that fails the template checks (an older format, a
    wrong dimension, damaged bytes): never searched, reported to the operator."""

    watchlist: str
    subject_id: str
    row: int
    position: int
    reason: str
    detail: str


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else moment(epoch)


def _text(raw: bytes) -> str:
    """Stored text as str even where the bytes on disk were damaged: a bad byte
    must not make a hit on that subject unreportable."""
    return raw.decode("utf-8", "replace")


def private_directory(path: Path) -> None:
    """Create ``path`` (and parents) if needed, owner-only."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIRECTORY_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty if absent, owner-only; restrict it if it exists."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    os.chmod(path, FILE_MODE)


def _subject(row: tuple) -> Subject:
    key, watchlist, subject_id, external_ref, reason, source, created, expires, count, models, images = row
    entry = SubjectEntry(watchlist, subject_id, reason, source, external_ref, _moment(expires))
    model_ids = tuple(sorted(models.split(","))) if models else ()
    return Subject(entry, key, moment(created), count, model_ids, images)


_WATCHLIST_QUERY = (
    "SELECT w.name, w.description, w.created_at,"
    " (SELECT COUNT(*) FROM subjects s WHERE s.watchlist = w.name),"
    " (SELECT COUNT(*) FROM templates t JOIN subjects s ON s.id = t.subject WHERE s.watchlist = w.name)"
    " FROM watchlists w"
)


def _watchlist(row: tuple) -> Watchlist:
    name, description, created, subjects, templates = row
    return Watchlist(name, description, moment(created), subjects, templates)


def _find(conn: sqlite3.Connection, watchlist: str, subject_id: str) -> Subject:
    found = conn.execute(
        f"SELECT {_SUBJECT_COLUMNS} FROM subjects s WHERE s.watchlist = ? AND s.subject_id = ?", (watchlist, subject_id)
    ).fetchone()
    if found is None:
        if conn.execute("SELECT 1 FROM watchlists WHERE name = ?", (watchlist,)).fetchone() is None:
            raise _no_watchlist(watchlist)
        raise VerifierError(
            Reason.SUBJECT_NOT_FOUND, f"no subject {subject_id!r} in watch-list {watchlist!r}",
            watchlist=watchlist, subject_id=subject_id,
        )
    return _subject(found)


# Rows read from the store per step of a scan: bounds the memory of a load to
# a few tens of MB beyond the vectors kept, whatever the gallery's size.
_SCAN_ROWS = 65536


@dataclass
class _Scan:
    """The result of one pass over the templates of a model (see :func:`_scan`)."""

    # Per group: (rows, positions, vectors) of the templates that passed, a part per step.
    kept: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]
    # (row, position) of each template that failed.
    suspect: list[tuple[int, int]]


def _scan(conn: sqlite3.Connection, spec: TemplateSpec, owners: list[np.ndarray], keep: bool) -> _Scan:
    """One pass over the stored templates of ``spec``'s model, in row order,
    keeping those of the subjects in ``owners`` (one sorted array of subject
    rows per group) that pass the template checks, and noting those that fail.

    Why it is shaped so: at a million templates the per-row Python work of a
    load was most of a start. So the cheap checks (version, stored as bytes,
    the right length) run in SQL, which hands over the vector only when they
    pass; the rows are read in steps of :data:`_SCAN_ROWS` and handled as
    columns (one ``zip``, one ``bytes.join``, one norm per step in numpy).
    A template that fails is looked at alone afterwards (:func:`_quarantine`).
    """
    ids = np.concatenate(owners) if owners else np.empty(0, dtype=np.int64)
    group = np.repeat(np.arange(len(owners), dtype=np.int64), [len(o) for o in owners])
    order = np.argsort(ids, kind="stable")
    ids, group = ids[order], group[order]
    found = _Scan({}, [])
    if not len(ids):
        return found
    cursor = conn.execute(
        "SELECT subject, position, CASE WHEN version = ? AND typeof(vector) = 'blob' AND length(vector) = ?"
        " THEN vector END FROM templates WHERE model_id = ? ORDER BY subject, position",
        (TEMPLATE_VERSION, 4 * spec.dimension, spec.model_id),
    )
    while chunk := cursor.fetchmany(_SCAN_ROWS):
        subjects, positions, vectors = zip(*chunk)
        rows = np.array(subjects, dtype=np.int64)
        at = np.minimum(np.searchsorted(ids, rows), len(ids) - 1)
        owned = ids[at] == rows
        sound = owned & np.fromiter(map(bool, vectors), dtype=bool, count=len(vectors))
        if sound.any():
            matrix = np.frombuffer(b"".join(compress(vectors, sound)), dtype="<f4").reshape(-1, spec.dimension)
            unit = _unit_rows(matrix)
            sound[np.flatnonzero(sound)[~unit]] = False
            if keep:
                kept_at = np.flatnonzero(sound)
                matrix, owner_of = matrix[unit], group[at[kept_at]]
                places = np.array(positions, dtype=np.int64)[kept_at]
                for owner in np.unique(owner_of).tolist():
                    mine = owner_of == owner
                    found.kept.setdefault(owner, []).append((rows[kept_at][mine], places[mine], matrix[mine]))
        found.suspect.extend((int(rows[i]), int(positions[i])) for i in np.flatnonzero(owned & ~sound).tolist())
    return found


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Which rows are finite unit vectors: the one test of a loaded vector's values
    (a non-finite value makes the norm non-finite, which fails it too)."""
    with np.errstate(all="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
    return np.abs(norms - 1.0) <= NORM_TOLERANCE


def _quarantine(conn: sqlite3.Connection, spec: TemplateSpec, found: list[tuple[int, int]]) -> list[QuarantinedTemplate]:
    """Of the stored templates at ``found`` (row, position), those of ``spec``'s
    model that fail the template checks, each with why and its subject; one
    that is gone or passes now is left out."""
    quarantined = []
    for row, position in found:
        stored = conn.execute(
            "SELECT s.watchlist, s.subject_id, t.version, t.vector FROM templates t JOIN subjects s ON s.id = t.subject"
            " WHERE t.subject = ? AND t.position = ? AND t.model_id = ?", (row, position, spec.model_id),
        ).fetchone()
        if stored is None:
            continue
        watchlist, subject_id, version, vector = stored
        data = vector if isinstance(vector, bytes) else b""
        if version == TEMPLATE_VERSION and len(data) == 4 * spec.dimension and _unit_rows(
                np.frombuffer(data, dtype="<f4").reshape(1, -1))[0]:
            continue
        problem = problem_with(version, spec.dimension, data) if isinstance(version, int) else (
            Reason.TEMPLATE_MALFORMED, "unreadable")
        # problem_with may pass a vector at the very edge of the tolerance that
        # _unit_rows failed: it stays out of the index, so it is reported.
        reason, detail = problem or (Reason.TEMPLATE_MALFORMED, "template vector is not a finite unit vector")
        quarantined.append(QuarantinedTemplate(watchlist, subject_id, row, position, reason.value, detail))
    return quarantined


def encode_payload(payload: dict) -> bytes:
    """Canonical JSON: the same change is the same bytes on every store."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def template_record(template: Template) -> dict:
    return {"model_id": template.model_id, "version": template.version,
            "vector": base64.b64encode(template.to_bytes()).decode()}


def template_of_record(record: dict) -> Template:
    """A template from a feed or bundle record; malformed bytes fail the template checks."""
    data = base64.b64decode(record["vector"], validate=True)
    return Template.from_parts(str(record["model_id"]), int(record["version"]), len(data) // 4, data)


def subject_record(
    entry: SubjectEntry, created: float, templates: list[Template], images: list["StoredImage"] | None = None
) -> dict:
    """A subject as a change on the feed: all a replica needs to store it alike,
    its enrolment images included (they travel base64-encoded)."""
    return {"watchlist": entry.watchlist, "subject_id": entry.subject_id, "external_ref": entry.external_ref,
            "reason": entry.reason, "source_agency": entry.source_agency, "created_at": created,
            "expires_at": _epoch(entry.expires_at), "templates": [template_record(t) for t in templates],
            "images": [{"position": i.position, "sha256": i.sha256, "size": i.size,
                        "data": base64.b64encode(i.data).decode("ascii")} for i in images or ()]}


def _insert_subject(conn: sqlite3.Connection, record: dict, row: int | None = None) -> int:
    """Insert a subject record (at ``row`` when replaying, so rows match the primary's)."""
    cursor = conn.execute(
        "INSERT INTO subjects (id, watchlist, subject_id, external_ref, reason, source_agency, created_at,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (row, record["watchlist"], record["subject_id"], record["external_ref"], record["reason"],
         record["source_agency"], record["created_at"], record["expires_at"]),
    )
    key = int(cursor.lastrowid or 0) if row is None else row
    conn.executemany(
        "INSERT INTO templates (subject, position, model_id, version, vector) VALUES (?, ?, ?, ?, ?)",
        [(key, i, t["model_id"], int(t["version"]), base64.b64decode(t["vector"]))
         for i, t in enumerate(record["templates"])],
    )
    conn.executemany(
        "INSERT INTO images (subject, position, sha256, size, data) VALUES (?, ?, ?, ?, ?)",
        [(key, int(i["position"]), i["sha256"], int(i["size"]), base64.b64decode(i["data"]))
         for i in record.get("images", ())],
    )
    return key


def _record_templates(record: dict) -> list[Template]:
    return [Template(t["model_id"], np.frombuffer(base64.b64decode(t["vector"]), dtype="<f4").astype(np.float32),
                     int(t["version"])) for t in record["templates"]]


def _rows_of(conn: sqlite3.Connection, watchlist: str) -> list[tuple[int, int]]:
    return [(int(r), int(n)) for r, n in conn.execute(
        "SELECT s.id, (SELECT COUNT(*) FROM templates t WHERE t.subject = s.id) FROM subjects s"
        " WHERE s.watchlist = ?", (watchlist,))]


def _replace_partner_list(conn: sqlite3.Connection, payload: dict) -> tuple[list[tuple[int, int]], list[int]]:
    """Replace a partner's list wholly (created if absent): its subjects, its
    provenance and the issuer's last sequence. Returns the (row, template count)
    removed and the rows added, in order."""
    name, bundle = payload["watchlist"], payload["provenance"]
    removed = _rows_of(conn, name)
    conn.execute("DELETE FROM subjects WHERE watchlist = ?", (name,))
    conn.execute("INSERT OR IGNORE INTO watchlists (name, description, created_at) VALUES (?, ?, ?)",
                 (name, payload["description"], payload["imported_at"]))
    rows = [_insert_subject(conn, {**subject, "watchlist": name}, payload["rows"][i] if "rows" in payload else None)
            for i, subject in enumerate(payload["subjects"])]
    conn.execute(
        "INSERT OR REPLACE INTO partner_lists (watchlist, issuer, key_id, sequence, created_at, expires_at,"
        " model_id, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (name, bundle["issuer"], bundle["key_id"], bundle["sequence"], bundle["created_at"], bundle["expires_at"],
         bundle["model_id"], payload["imported_at"]),
    )
    conn.execute("INSERT OR REPLACE INTO partner_sequences (issuer, sequence) VALUES (?, ?)",
                 (bundle["issuer"], bundle["sequence"]))
    return removed, rows


def _replace_templates(conn: sqlite3.Connection, row: int, templates: list[tuple[int, dict]]) -> None:
    conn.execute("DELETE FROM templates WHERE subject = ?", (row,))
    conn.executemany(
        "INSERT INTO templates (subject, position, model_id, version, vector) VALUES (?, ?, ?, ?, ?)",
        [(row, position, t["model_id"], int(t["version"]), base64.b64decode(t["vector"])) for position, t in templates],
    )


def _replay(conn: sqlite3.Connection, change: Change) -> Applied:
    """Apply a change from the feed exactly as the primary did (same rows)."""
    payload = json.loads(change.payload)
    if change.kind == CREATE_WATCHLIST:
        conn.execute("INSERT INTO watchlists (name, description, created_at) VALUES (?, ?, ?)",
                     (payload["name"], payload["description"], payload["created_at"]))
        return Applied(change, created=(payload["name"],))
    if change.kind == DELETE_WATCHLIST:
        conn.execute("DELETE FROM subjects WHERE watchlist = ?", (payload["name"],))
        conn.execute("DELETE FROM watchlists WHERE name = ?", (payload["name"],))
        return Applied(change, dropped=(payload["name"],))
    if change.kind == ADD_SUBJECT:
        row = _insert_subject(conn, payload, int(payload["row"]))
        return Applied(change, added=((row, payload["watchlist"], _record_templates(payload), payload["expires_at"]),))
    if change.kind == REMOVE_SUBJECT:
        count = conn.execute("SELECT COUNT(*) FROM templates WHERE subject = ?", (payload["row"],)).fetchone()[0]
        conn.execute("DELETE FROM subjects WHERE id = ?", (payload["row"],))
        return Applied(change, removed=((int(payload["row"]), payload["watchlist"], int(count)),))
    if change.kind == REPLACE_PARTNER_LIST:
        removed, rows = _replace_partner_list(conn, payload)
        name = payload["watchlist"]
        return Applied(
            change, created=(name,), removed=tuple((row, name, count) for row, count in removed),
            added=tuple((row, name, _record_templates(subject), subject["expires_at"])
                        for row, subject in zip(rows, payload["subjects"])),
        )
    if change.kind == REPLACE_TEMPLATES:
        row = int(payload["row"])
        watchlist, expires, count = conn.execute(
            "SELECT s.watchlist, s.expires_at, (SELECT COUNT(*) FROM templates t WHERE t.subject = s.id)"
            " FROM subjects s WHERE s.id = ?", (row,)).fetchone()
        _replace_templates(conn, row, [(int(t["position"]), t) for t in payload["templates"]])
        return Applied(change, removed=((row, watchlist, int(count)),),
                       added=((row, watchlist, _record_templates(payload), expires),))
    if change.kind == NEW_EPOCH:
        return Applied(change)
    if change.kind in _EXTENSIONS:
        return _EXTENSIONS[change.kind](conn, change)
    raise StoreError(f"change {change.seq} is of a kind this program does not know: {change.kind!r}")


_EXTENSIONS: dict[str, "Callable[[sqlite3.Connection, Change], Applied]"] = {}


def register_change_kind(kind: str, replay: "Callable[[sqlite3.Connection, Change], Applied]") -> None:
    """Let another store sharing this file (the registry) replay its own kind of change from the feed."""
    _EXTENSIONS[kind] = replay


def _no_watchlist(name: str) -> VerifierError:
    return VerifierError(Reason.WATCHLIST_NOT_FOUND, f"no watch-list named {name!r}", watchlist=name)


def _position_in(conn: sqlite3.Connection) -> FeedPosition:
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    seq = int(meta["change_seq"])
    last = conn.execute("SELECT epoch FROM changes WHERE seq = ?", (seq,)).fetchone()
    return FeedPosition(str(meta["store_id"]), seq, int(meta.get("epoch", 1)),
                        int(last[0]) if last else 0, int(meta.get("fenced_by", 0)))


@dataclass(frozen=True)
class PinnedStore:
    """A store held at one change by an open read transaction (see :meth:`WatchlistStore.pinned`)."""

    conn: sqlite3.Connection
    position: FeedPosition
    path: Path
    # The leading bytes of the file at ``path`` that are the pinned store
    # itself while the pin holds, or None when only a copy gives it.
    file_bytes: int | None = None

    def copy_to(self, target: Path, durable: bool = True) -> FeedPosition:
        """Copy the store as pinned to ``target`` (owner-only; synced when
        ``durable``: a copy sent and deleted at once need not reach the disk, and
        syncing 900 MB took seconds); its position."""
        private_file(target)
        copy = sqlite3.connect(target)
        try:
            if not durable:
                copy.execute("PRAGMA synchronous=OFF")
            # The backup reads through the open read transaction: the pinned change.
            self.conn.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
        if durable:
            with open(target, "rb") as written:
                os.fsync(written.fileno())
        return self.position


class WatchlistStore:
    """Watch-lists, subjects and their templates in one SQLite file.

    Writes go through one connection, one at a time; reads use a small pool of
    their own connections, which WAL lets run beside a write.
    """

    def __init__(self, path: Path, busy_timeout: float, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._busy_timeout = busy_timeout
        self._lock_fd: int | None = None
        self._write_lock = threading.Lock()
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        # The change the open write transaction records (kind, payload), and
        # the sequence number of the last change committed through this handle.
        self._pending: tuple[str, dict] | None = None
        self.last_seq = 0
        self._committing = 0
        # What this handle opened (see check_identity): None until opened for writing.
        self._identity: dict[str, FileIdentity | None] | None = None
        self._opened_id: str | None = None
        self._lost = False

    @classmethod
    def create(cls, path: Path, busy_timeout: float) -> "WatchlistStore":
        """Create a new, empty store at ``path`` and open it for writing; refuses
        to touch a file that is already there."""
        private_directory(path.parent)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError as exc:
            raise StoreError(f"{path} exists; a store is created once") from exc
        store = cls._lock(path, busy_timeout)
        try:
            opened = FileIdentity.at(path)
            store._writer = store._connect()
            store._writer.execute("PRAGMA journal_mode=WAL")
            store._writer.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {_IMAGES_SCHEMA} COMMIT;")
            with store._transaction(count=False) as conn:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("store_id", uuid.uuid4().hex), ("change_seq", 0)],
                )
            store._ensure_feed()
            store._remember_identity(opened)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, path: Path, busy_timeout: float) -> "WatchlistStore":
        """Open an existing store for writing; one process at a time. A missing
        store is :class:`StoreMissing`, never created here."""
        if not path.is_file():
            raise StoreMissing(
                f"no watch-list store at {path}: create one with `verifier watchlist init`, "
                "or restore the file from its backup"
            )
        store = cls._lock(path, busy_timeout)
        try:
            for owned in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                if owned.exists():
                    os.chmod(owned, FILE_MODE)
            opened = FileIdentity.at(path)
            store._writer = store._connect()
            store._writer.execute("PRAGMA journal_mode=WAL")
            store._upgrade(store._writer)
            store._check_schema()
            store._ensure_feed()
            store._remember_identity(opened)
        except sqlite3.Error as exc:
            store.close()
            raise StoreFailure(f"{path} cannot be read as a watch-list store: {exc}") from exc
        except OSError as exc:
            store.close()
            raise StoreFailure(f"{path} cannot be opened: {exc}") from exc
        except BaseException:
            store.close()
            raise
        return store

    def _upgrade(self, writer: sqlite3.Connection) -> None:
        """Bring a schema-1 store to schema 2 (add the images table) in one
        transaction; any other version is left for :meth:`_check_schema` to refuse."""
        found = writer.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is None or found[0] != 1:
            return
        with self._transaction(count=False) as conn:
            conn.execute(_IMAGES_SCHEMA)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))

    def _ensure_feed(self) -> None:
        """Add the feed's tables and meta rows if this store lacks them (a store
        made before the feed: its feed starts at its current change sequence)."""
        with self._transaction(count=False) as conn:
            for statement in _FEED_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', 1)")
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('fenced_by', 0)")
            conn.execute("INSERT OR IGNORE INTO meta (key, value)"
                         " SELECT 'feed_start', value FROM meta WHERE key = 'change_seq'")

    @classmethod
    def _lock(cls, path: Path, busy_timeout: float) -> "WatchlistStore":
        store = cls(path, busy_timeout, readonly=False)
        lock = Path(f"{path}.lock")
        try:
            store._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
            os.chmod(lock, FILE_MODE)
            fcntl.flock(store._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            store.close()
            raise StoreError(f"{path} is in use by another process (stop the server to write to it)") from exc
        except OSError as exc:  # a read-only file system, a full disk, an I/O error
            store.close()
            raise StoreFailure(f"{path}: its lock {lock} cannot be taken: {exc}") from exc
        return store

    @classmethod
    def open_readonly(cls, path: Path, busy_timeout: float) -> "WatchlistStore":
        """Open an existing store to read, beside a process that may be writing it."""
        if not path.is_file():
            raise StoreMissing(f"no watch-list store at {path}")
        store = cls(path, busy_timeout, readonly=True)
        try:
            store._check_schema()
        except sqlite3.Error as exc:
            store.close()
            raise StoreFailure(f"{path} cannot be read as a watch-list store: {exc}") from exc
        return store

    def _connect(self) -> sqlite3.Connection:
        target = f"file:{self.path}?mode=ro" if self.readonly else str(self.path)
        conn = sqlite3.connect(
            target, uri=self.readonly, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.text_factory = _text
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _check_schema(self) -> None:
        with self._reading() as conn:
            found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is None or found[0] != SCHEMA_VERSION:
            upgrade = " (open it for writing once, e.g. `verifier watchlist migrate`, to upgrade it)" if (
                found is not None and found[0] == 1 and self.readonly) else ""
            raise StoreError(
                f"{self.path} has schema {found and found[0]}, this program reads {SCHEMA_VERSION}{upgrade}"
            )

    def _remember_identity(self, opened: FileIdentity | None) -> None:
        """Note the files this handle opened, and its store id (see :meth:`check_identity`)."""
        found = {suffix: FileIdentity.at(f"{self.path}{suffix}") for suffix in _OPEN_FILES}
        if opened is None or found[""] != opened:
            raise StoreMissing(f"{self.path} was replaced while it was being opened")
        self._identity = found
        self._opened_id = str(self._meta("store_id"))

    def check_identity(self, deep: bool = False) -> None:
        """Raise :class:`StoreMissing` unless the files this handle opened for
        writing are still the files at their paths (and, ``deep``, the database
        at the path, read afresh, still holds the store id it was opened with:
        a file rewritten in place). A few ``stat`` calls; ``deep`` opens a
        connection. Nothing to check on a read-only handle."""
        if self._identity is None:
            return
        try:
            for suffix, opened in self._identity.items():
                if opened is not None and FileIdentity.at(f"{self.path}{suffix}") != opened:
                    self._lose(f"{self.path}{suffix}")
            if self._lock_fd is not None and FileIdentity.at(f"{self.path}.lock") != FileIdentity.of_descriptor(
                    self._lock_fd):
                self._lose(f"{self.path}.lock")
        except OSError as exc:
            raise StoreFailure(f"{self.path} cannot be looked at: {exc}") from exc
        if deep:
            try:
                fresh = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self._busy_timeout)
                try:
                    found = fresh.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
                finally:
                    fresh.close()
            except sqlite3.Error as exc:
                raise StoreFailure(f"{self.path} cannot be read afresh: {exc}") from exc
            if found is None or str(found[0]) != self._opened_id:
                self._lose(f"{self.path} (store id {found and found[0]}, opened as {self._opened_id})")

    def _lose(self, what: str) -> None:
        self._lost = True
        raise StoreMissing(
            f"{what} is no longer the file this server opened (removed, moved or replaced): the watch-list store "
            "is gone from under the server; nothing more is read from it or written to it"
        )

    def close(self) -> None:
        with self._connections_lock:
            if self._lost and self._connections:
                # Closing the last connection would checkpoint and delete the
                # log by name: perhaps another store's by now (module docstring).
                _ABANDONED.extend(self._connections)
            else:
                for conn in self._connections:
                    conn.close()
            self._connections.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        self.check_identity()
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._failing_as_store(self._connect)
        try:
            yield conn
        except sqlite3.Error as exc:
            raise StoreFailure(f"reading {self.path} failed: {exc}") from exc
        finally:
            self._idle.put(conn)

    def _failing_as_store(self, step):  # noqa: ANN001, ANN202 - a zero-argument callable and its result
        try:
            return step()
        except sqlite3.Error as exc:
            raise StoreFailure(f"{self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self, count: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; committed (and on disk) when the block ends.
        A SQLite failure rolls it back and surfaces as :class:`StoreFailure`;
        a store that is no longer itself (see :meth:`check_identity`) rolls it
        back before the commit, or, found just after it, fails it unacknowledged,
        as :class:`StoreMissing`."""
        if self._writer is None:
            raise StoreError(f"{self.path} is open read-only")
        with self._write_lock:
            conn = self._writer
            self._failing_as_store(lambda: conn.execute("BEGIN IMMEDIATE"))
            self._pending = None
            try:
                yield conn
                if count:
                    self._commit_change(conn)
                self.check_identity()
                conn.execute("COMMIT")
                self.check_identity()
                if count:
                    self.last_seq = self._committing
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the failure being raised already says the write did not happen
                if isinstance(exc, sqlite3.Error):
                    raise StoreFailure(f"writing {self.path} failed: {exc}") from exc
                raise

    def transaction(self, count: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction for another store sharing this file (the
        registry): it must :meth:`record` its change, which joins the feed
        (``count`` False: a schema step that is no change)."""
        return self._transaction(count)

    def reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read connection for another store sharing this file."""
        return self._reading()

    def record(self, kind: str, payload: dict) -> None:
        """Name the change the open transaction makes (see :meth:`transaction`)."""
        self._record(kind, payload)

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database and truncate it (after an
        erasure: the erased pages must not linger in the log); False when a
        reader kept it from completing."""
        if self._writer is None:
            raise StoreError(f"{self.path} is open read-only")
        with self._write_lock:
            busy, _, _ = self._failing_as_store(
                lambda: self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())  # type: ignore[union-attr]
        return not busy

    def _record(self, kind: str, payload: dict) -> None:
        """Name the change the open transaction makes: it goes on the feed with it."""
        self._pending = (kind, payload)

    def _commit_change(self, conn: sqlite3.Connection) -> None:
        if self._pending is None:
            raise StoreError("a change to the store must be recorded on the change feed")
        kind, payload = self._pending
        fenced = conn.execute("SELECT value FROM meta WHERE key = 'fenced_by'").fetchone()[0]
        epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
        if fenced > epoch:
            raise VerifierError(
                Reason.STALE_EPOCH,
                f"this server is primary of epoch {epoch}, but epoch {fenced} exists: it takes no writes; "
                "restart it as a replica of the current primary",
                epoch=epoch, newer_epoch=fenced,
            )
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'change_seq'")
        seq = conn.execute("SELECT value FROM meta WHERE key = 'change_seq'").fetchone()[0]
        conn.execute("INSERT INTO changes (seq, epoch, kind, payload, committed_at) VALUES (?, ?, ?, ?, ?)",
                     (seq, epoch, kind, encode_payload(payload), time.time()))
        self._committing = int(seq)

    def apply_change(self, change: Change) -> Applied | None:
        """Apply a change from the primary's feed, durably, with the same
        sequence number, epoch and rows. A change already applied is skipped
        (None); one that is not the next is :class:`FeedGap`; one of an older
        epoch than this store has seen is refused (STALE_EPOCH): a returning
        old primary cannot fork the data."""
        with self._transaction(count=False) as conn:
            seq = int(conn.execute("SELECT value FROM meta WHERE key = 'change_seq'").fetchone()[0])
            if change.seq <= seq:
                return None
            if change.seq != seq + 1:
                raise FeedGap(f"change {change.seq} offered after {seq}: the feed has a gap")
            epoch = int(conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
            if change.epoch < epoch:
                raise VerifierError(
                    Reason.STALE_EPOCH, f"change {change.seq} is of epoch {change.epoch}; this store is at {epoch}",
                    seq=change.seq, epoch=change.epoch, store_epoch=epoch,
                )
            applied = _replay(conn, change)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'change_seq'", (change.seq,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (change.epoch,))
            conn.execute("INSERT INTO changes (seq, epoch, kind, payload, committed_at) VALUES (?, ?, ?, ?, ?)",
                         (change.seq, change.epoch, change.kind, change.payload, change.committed_at))
        self.last_seq = change.seq
        return applied

    def new_epoch(self) -> int:
        """Begin a new epoch (promotion): one epoch above any this store has
        seen, as a change on the feed, so every follower learns it in order."""
        with self._transaction() as conn:
            epoch = int(conn.execute("SELECT MAX(value) FROM meta WHERE key IN ('epoch', 'fenced_by')").fetchone()[0])
            conn.execute("UPDATE meta SET value = ? WHERE key IN ('epoch', 'fenced_by')", (epoch + 1,))
            self._record(NEW_EPOCH, {"epoch": epoch + 1})
        return epoch + 1

    def fence(self, newer_epoch: int) -> None:
        """Record that a newer epoch exists (a follower has shown it): this store
        takes no more writes as a primary."""
        with self._transaction(count=False) as conn:
            conn.execute("UPDATE meta SET value = MAX(value, ?) WHERE key = 'fenced_by'", (newer_epoch,))

    def position(self) -> FeedPosition:
        with self._reading() as conn:
            return _position_in(conn)

    def epoch_at(self, seq: int) -> int | None:
        """The epoch of the change at ``seq`` in this store's feed; 0 for the
        sequence the feed started from (no change row), None when unknown."""
        with self._reading() as conn:
            found = conn.execute("SELECT epoch FROM changes WHERE seq = ?", (seq,)).fetchone()
            start = conn.execute("SELECT value FROM meta WHERE key = 'feed_start'").fetchone()
        if found is not None:
            return int(found[0])
        return 0 if start is not None and seq == int(start[0]) else None

    def changes_since(self, seq: int, limit: int) -> list[Change]:
        """Up to ``limit`` changes after ``seq``, in order."""
        with self._reading() as conn:
            found = conn.execute(
                "SELECT seq, epoch, kind, payload, committed_at FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [Change(int(q), int(e), str(k), bytes(p), float(t)) for q, e, k, p, t in found]

    def backup_to(self, target: Path) -> FeedPosition:
        """Copy the store, consistent at one change, to ``target`` (owner-only, synced);
        returns the feed position the copy is at."""
        with self.pinned() as pinned:
            return pinned.copy_to(target)

    @contextmanager
    def pinned(self, file_image: bool = False) -> Iterator["PinnedStore"]:
        """The store as it is now, held in a read transaction for the block (writes
        go on beside it): what is copied from it is at the position it names,
        whatever was committed since. ``file_image``: also find out whether the
        database file itself is that store (:attr:`PinnedStore.file_bytes`)."""
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                position = _position_in(conn)
                yield PinnedStore(conn, position, self.path, self._file_holds(conn) if file_image else None)
            finally:
                conn.execute("COMMIT")

    def _file_holds(self, conn: sqlite3.Connection) -> int | None:
        """How many leading bytes of the database file are exactly the store as
        ``conn``'s open read transaction sees it, for as long as it stays open;
        None when the file does not hold that view (a copy must be made).

        Why this holds: in WAL mode only a checkpoint writes the database file,
        and a checkpoint never copies in a frame newer than an open reader's
        snapshot. So when a checkpoint run after the snapshot began finds every
        frame of the log copied in, the snapshot has nothing left in the log:
        the file is the snapshot, and stays so until the reader ends. Anything
        short of that (a write racing the pin, a reader holding old frames)
        answers None. Reading the file saves the store copy a snapshot would
        otherwise make (seconds and the store's size on disk at a million
        templates)."""
        if self._writer is None:
            return None
        with self._write_lock:
            busy, logged, copied = self._failing_as_store(
                lambda: self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())  # type: ignore[union-attr]
        if busy or logged < 0 or copied != logged:
            return None
        (pages,), (page_size,) = conn.execute("PRAGMA page_count").fetchone(), conn.execute("PRAGMA page_size").fetchone()
        size = int(pages) * int(page_size)
        return size if self.path.stat().st_size >= size else None

    def provenance(self, watchlists: list[str]) -> dict[str, Provenance]:
        """The provenance of those of ``watchlists`` that are partner lists."""
        if not watchlists:
            return {}
        with self._reading() as conn:
            found = conn.execute(
                "SELECT watchlist, issuer, key_id, sequence, created_at, expires_at, model_id FROM partner_lists"
                f" WHERE watchlist IN ({','.join('?' * len(watchlists))})", watchlists,
            ).fetchall()
        return {name: Provenance(issuer, key, int(seq), moment(created), moment(expires), model)
                for name, issuer, key, seq, created, expires, model in found}

    def partner_sequence(self, issuer: str) -> int | None:
        """The sequence of the last bundle accepted from ``issuer``, if any."""
        with self._reading() as conn:
            found = conn.execute("SELECT sequence FROM partner_sequences WHERE issuer = ?", (issuer,)).fetchone()
        return None if found is None else int(found[0])

    def replace_partner_list(
        self, name: str, description: str, provenance: dict, subjects: list[dict]
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """Replace a partner's list with a bundle's subjects in one transaction,
        provenance and issuer sequence with it. A local list of that name (not a
        partner's, or another issuer's) is never overwritten; a bundle whose
        sequence is not newer than the last accepted from its issuer is refused."""
        with self._transaction() as conn:
            owner = conn.execute("SELECT issuer FROM partner_lists WHERE watchlist = ?", (name,)).fetchone()
            exists = conn.execute("SELECT 1 FROM watchlists WHERE name = ?", (name,)).fetchone() is not None
            if exists and (owner is None or owner[0] != provenance["issuer"]):
                raise VerifierError(Reason.BUNDLE_REFUSED, f"watch-list {name!r} is not {provenance['issuer']}'s list",
                                    cause="list_not_partners", watchlist=name)
            last = conn.execute("SELECT sequence FROM partner_sequences WHERE issuer = ?",
                                (provenance["issuer"],)).fetchone()
            if last is not None and provenance["sequence"] <= last[0]:
                raise VerifierError(
                    Reason.BUNDLE_REFUSED,
                    f"bundle {provenance['sequence']} of {provenance['issuer']} is not newer than {last[0]}, "
                    "the last imported: a replay", cause="replayed", issuer=provenance["issuer"],
                )
            payload = {"watchlist": name, "description": description, "provenance": provenance,
                       "subjects": subjects, "imported_at": time.time()}
            removed, rows = _replace_partner_list(conn, payload)
            self._record(REPLACE_PARTNER_LIST, {**payload, "rows": rows})
        return removed, rows

    def check_writable(self) -> None:
        """Prove a write commits (a no-op update, synced): a store that opens but
        cannot be written (disk full, read-only) is found before it is served."""
        with self._transaction(count=False) as conn:
            conn.execute("UPDATE meta SET value = value WHERE key = 'store_id'")

    def _meta(self, key: str) -> object:
        with self._reading() as conn:
            return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    @property
    def store_id(self) -> str:
        """A random id given to the store when created: a snapshot of another store never matches."""
        return str(self._meta("store_id"))

    def change_seq(self) -> int:
        """How many changes have been committed; grows with every write."""
        return int(self._meta("change_seq"))  # type: ignore[call-overload]

    def create_watchlist(self, name: str, description: str) -> Watchlist:
        created = time.time()
        with self._transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO watchlists (name, description, created_at) VALUES (?, ?, ?)",
                    (name, description, created),
                )
            except sqlite3.IntegrityError as exc:
                raise VerifierError(Reason.WATCHLIST_EXISTS, f"watch-list {name!r} exists", watchlist=name) from exc
            self._record(CREATE_WATCHLIST, {"name": name, "description": description, "created_at": created})
        return Watchlist(name, description, datetime.fromtimestamp(created, UTC))

    def delete_watchlist(self, name: str, force: bool) -> Watchlist:
        """Delete a watch-list; one that still holds subjects only with ``force``
        (its subjects and templates go with it, in the same transaction)."""
        with self._transaction() as conn:
            found = self._watchlist_in(conn, name)
            if found.subjects and not force:
                raise VerifierError(
                    Reason.WATCHLIST_NOT_EMPTY,
                    f"watch-list {name!r} holds {found.subjects} subjects; remove them or delete with force",
                    watchlist=name, subjects=found.subjects,
                )
            conn.execute("DELETE FROM subjects WHERE watchlist = ?", (name,))
            conn.execute("DELETE FROM watchlists WHERE name = ?", (name,))
            self._record(DELETE_WATCHLIST, {"name": name})
        return found

    def watchlists(self) -> list[Watchlist]:
        """Every watch-list with how many subjects and templates it holds."""
        with self._reading() as conn:
            rows = conn.execute(_WATCHLIST_QUERY + " ORDER BY w.name").fetchall()
        return [_watchlist(row) for row in rows]

    def watchlists_after(self, after: str, limit: int) -> list[Watchlist]:
        """At most ``limit`` watch-lists whose names sort after ``after``, by name:
        one page of a listing that no number of lists can make too large."""
        with self._reading() as conn:
            rows = conn.execute(_WATCHLIST_QUERY + " WHERE w.name > ? ORDER BY w.name LIMIT ?",
                                (after, limit)).fetchall()
        return [_watchlist(row) for row in rows]

    def watchlist_count(self) -> int:
        with self._reading() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM watchlists").fetchone()[0])

    def watchlist(self, name: str) -> Watchlist:
        with self._reading() as conn:
            return self._watchlist_in(conn, name)

    @staticmethod
    def _watchlist_in(conn: sqlite3.Connection, name: str) -> Watchlist:
        found = conn.execute(_WATCHLIST_QUERY + " WHERE w.name = ?", (name,)).fetchone()
        if found is None:
            raise _no_watchlist(name)
        return _watchlist(found)

    def add_subject(
        self, entry: SubjectEntry, templates: list[Template], images: dict[int, bytes] | None = None
    ) -> Subject:
        """Store a subject with all its templates, and the images (by template
        position) they were made from, in one transaction."""
        kept = [StoredImage.of(position, data) for position, data in sorted((images or {}).items())]
        created = time.time()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM watchlists WHERE name = ?", (entry.watchlist,)).fetchone() is None:
                raise _no_watchlist(entry.watchlist)
            record = subject_record(entry, created, templates, kept)
            try:
                row = _insert_subject(conn, record)
            except sqlite3.IntegrityError as exc:
                raise VerifierError(
                    Reason.SUBJECT_EXISTS, f"subject {entry.subject_id!r} is already in watch-list {entry.watchlist!r}",
                    watchlist=entry.watchlist, subject_id=entry.subject_id,
                ) from exc
            self._record(ADD_SUBJECT, {**record, "row": row})
        models = tuple(sorted({t.model_id for t in templates}))
        return Subject(entry, row, datetime.fromtimestamp(created, UTC), len(templates), models, len(kept))

    def images_of(self, row: int) -> list[StoredImage]:
        """The enrolment images of a subject, by position."""
        with self._reading() as conn:
            found = conn.execute(
                "SELECT position, sha256, size, data FROM images WHERE subject = ? ORDER BY position", (row,)
            ).fetchall()
        return [StoredImage(int(p), str(h), int(n), bytes(d)) for p, h, n, d in found]

    def replace_templates(self, row: int, templates: dict[int, Template]) -> None:
        """Give a subject new templates (by image position) in place of all its
        old ones, in one transaction: a subject is of one model or the other,
        never half migrated. A subject removed meanwhile is SUBJECT_NOT_FOUND."""
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM subjects WHERE id = ?", (row,)).fetchone() is None:
                raise VerifierError(Reason.SUBJECT_NOT_FOUND, f"no subject at store row {row}", row=row)
            _replace_templates(conn, row, [(position, template_record(t)) for position, t in sorted(templates.items())])
            self._record(REPLACE_TEMPLATES, {"row": row, "templates": [
                {"position": position, **template_record(t)} for position, t in sorted(templates.items())
            ]})

    def unmigrated(self, model_id: str, watchlist: str | None = None) -> dict[str, Unmigrated]:
        """For each watch-list holding any, its subjects that have no template of
        ``model_id`` (expired or not: an expiry can be lifted by re-enrolment,
        and a list is either wholly of the served model or refused)."""
        where, args = ("AND s.watchlist = ?", (model_id, watchlist)) if watchlist is not None else ("", (model_id,))
        with self._reading() as conn:
            found = conn.execute(
                "SELECT s.watchlist, s.id, EXISTS (SELECT 1 FROM images i WHERE i.subject = s.id) FROM subjects s"
                " WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.subject = s.id AND t.model_id = ?)"
                f" {where} ORDER BY s.id",
                args,
            ).fetchall()
        rows: dict[str, set[int]] = {}
        bare: dict[str, set[int]] = {}
        for name, row, has_images in found:
            rows.setdefault(name, set()).add(int(row))
            if not has_images:
                bare.setdefault(name, set()).add(int(row))
        return {name: Unmigrated(name, frozenset(keys), frozenset(bare.get(name, ()))) for name, keys in rows.items()}

    def remove_subject(self, watchlist: str, subject_id: str) -> Subject:
        """Delete a subject and its templates in one transaction; returns what was removed."""
        with self._transaction() as conn:
            found = _find(conn, watchlist, subject_id)
            conn.execute("DELETE FROM subjects WHERE id = ?", (found.row,))
            self._record(REMOVE_SUBJECT, {"watchlist": watchlist, "subject_id": subject_id, "row": found.row})
        return found

    def subject(self, watchlist: str, subject_id: str) -> Subject:
        with self._reading() as conn:
            return _find(conn, watchlist, subject_id)

    def subjects_by_row(self, rows: list[int]) -> dict[int, Subject]:
        """The subjects with these rows; a row removed meanwhile is simply absent."""
        if not rows:
            return {}
        with self._reading() as conn:
            found = conn.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects s WHERE s.id IN ({','.join('?' * len(rows))})", rows
            ).fetchall()
        return {subject.row: subject for subject in map(_subject, found)}

    def subjects(self, watchlist: str | None = None) -> Iterator[Subject]:
        """Every subject (of one watch-list), in enrolment order."""
        where, args = ("WHERE s.watchlist = ?", (watchlist,)) if watchlist is not None else ("", ())
        with self._reading() as conn:
            found = conn.execute(f"SELECT {_SUBJECT_COLUMNS} FROM subjects s {where} ORDER BY s.id", args).fetchall()
        return map(_subject, found)

    def templates_of(self, row: int) -> list[Template]:
        with self._reading() as conn:
            found = conn.execute(
                "SELECT model_id, version, vector FROM templates WHERE subject = ? ORDER BY position", (row,)
            ).fetchall()
        return [Template(m, np.frombuffer(v, dtype="<f4").astype(np.float32), ver) for m, ver, v in found]

    def searchable(self, spec: TemplateSpec, now: float) -> tuple[dict[str, SearchableTemplates], list[QuarantinedTemplate]]:
        """For each watch-list, the templates of ``spec``'s model of subjects not
        expired at ``now``; and the rows of that model that fail the template
        checks, which are left out (quarantined) while the rest serves."""
        with self._reading() as conn:
            names, owners = self._owners(conn, "(expires_at IS NULL OR expires_at > ?)", (now,))
            found = _scan(conn, spec, owners, keep=True)
            quarantined = _quarantine(conn, spec, found.suspect)
        result = {}
        for i, name in enumerate(names):
            parts = found.kept.get(i, [])
            result[name] = SearchableTemplates(
                rows=np.concatenate([p[0] for p in parts]) if parts else np.empty(0, dtype=np.int64),
                positions=np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=np.int64),
                vectors=np.concatenate([p[2] for p in parts]) if parts else np.empty((0, spec.dimension), np.float32),
            )
        return result, quarantined

    def quarantined(self, spec: TemplateSpec) -> list[QuarantinedTemplate]:
        """Every stored row of ``spec``'s model that fails the template checks, expired or not."""
        with self._reading() as conn:
            _, owners = self._owners(conn, "1", ())
            return _quarantine(conn, spec, _scan(conn, spec, owners, keep=False).suspect)

    def still_quarantined(self, spec: TemplateSpec, found: list[tuple[int, int]]) -> list[QuarantinedTemplate]:
        """Of the templates at ``found`` (row, position) that failed the checks
        when an index was built, those still stored and still failing: what a
        start from that index's snapshot reports, without a scan of the store."""
        with self._reading() as conn:
            return _quarantine(conn, spec, found)

    @staticmethod
    def _owners(conn: sqlite3.Connection, where: str, args: tuple) -> tuple[list[str], list[np.ndarray]]:
        """The watch-lists, and the rows of each one's subjects that match ``where``."""
        names = [name for (name,) in conn.execute("SELECT name FROM watchlists ORDER BY name")]
        owners = []
        for name in names:
            # One string of every row, parsed in C: a million rows as Python ints cost seconds.
            (joined,) = conn.execute(
                f"SELECT group_concat(id) FROM subjects WHERE watchlist = ? AND {where}", (name, *args)
            ).fetchone()
            owners.append(np.sort(np.fromstring(joined or "", dtype=np.int64, sep=",")))
        return names, owners

    def expiries(self) -> dict[int, float]:
        """Row to expiry time (epoch seconds) of every subject that has one."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT id, expires_at FROM subjects WHERE expires_at IS NOT NULL"))

    def template_models(self) -> dict[str, int]:
        """How many templates each model made: those of another model cannot be searched."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT model_id, COUNT(*) FROM templates GROUP BY model_id"))
