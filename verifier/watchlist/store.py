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

Since schema 2 the store keeps each subject's enrolment images, as sent (with
their sha256 and size): they are the agency's record, and when the model
changes, templates are made again from them (``verifier watchlist migrate``).
A store of schema 1 is upgraded when first opened for writing (one
transaction: the images table is added; subjects enrolled before have none).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from verifier.errors import Reason, VerifierError
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

_SUBJECT_COLUMNS = (
    "s.id, s.watchlist, s.subject_id, s.external_ref, s.reason, s.source_agency, s.created_at, s.expires_at, "
    "(SELECT COUNT(*) FROM templates t WHERE t.subject = s.id), "
    "(SELECT GROUP_CONCAT(DISTINCT t.model_id) FROM templates t WHERE t.subject = s.id), "
    "(SELECT COUNT(*) FROM images i WHERE i.subject = s.id)"
)


FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


class StoreError(Exception):
    """The store cannot be used: of another schema, held by another process, or failing."""


class StoreMissing(StoreError):
    """No store where one is configured: it must be created (or restored) by an operator."""


class StoreFailure(StoreError):
    """SQLite failed underneath a read or write (disk full, read-only, I/O error, corruption)."""


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


def _checked(records: list[tuple], dimension: int) -> tuple[list[tuple], list[QuarantinedTemplate]]:
    """Split (watchlist, row, position, version, vector, subject_id) records into
    those that pass the template checks and those to quarantine. The common case
    (right size and version) is checked in one vectorised pass."""
    size = 4 * dimension
    sized = [r for r in records if r[3] == TEMPLATE_VERSION and isinstance(r[4], bytes) and len(r[4]) == size]
    good: list[tuple] = []
    suspect = [r for r in records if not (r[3] == TEMPLATE_VERSION and isinstance(r[4], bytes) and len(r[4]) == size)]
    if sized:
        vectors = np.frombuffer(b"".join(r[4] for r in sized), dtype="<f4").reshape(len(sized), dimension)
        with np.errstate(all="ignore"):
            norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
        sound = np.isfinite(vectors).all(axis=1) & (np.abs(norms - 1.0) <= NORM_TOLERANCE)
        good = [r for r, ok in zip(sized, sound) if ok]
        suspect.extend(r for r, ok in zip(sized, sound) if not ok)
    quarantined = []
    for watchlist, row, position, version, vector, subject_id in suspect:
        data = vector if isinstance(vector, bytes) else b""
        reason, detail = problem_with(int(version), dimension, data) or (Reason.TEMPLATE_MALFORMED, "unreadable")
        quarantined.append(QuarantinedTemplate(watchlist, subject_id, int(row), int(position), reason.value, detail))
    return good, quarantined


def _no_watchlist(name: str) -> VerifierError:
    return VerifierError(Reason.WATCHLIST_NOT_FOUND, f"no watch-list named {name!r}", watchlist=name)


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
            store._writer = store._connect()
            store._writer.execute("PRAGMA journal_mode=WAL")
            store._writer.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {_IMAGES_SCHEMA} COMMIT;")
            with store._transaction(count=False) as conn:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("store_id", uuid.uuid4().hex), ("change_seq", 0)],
                )
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
            store._writer = store._connect()
            store._writer.execute("PRAGMA journal_mode=WAL")
            store._upgrade(store._writer)
            store._check_schema()
        except sqlite3.Error as exc:
            store.close()
            raise StoreFailure(f"{path} cannot be read as a watch-list store: {exc}") from exc
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
        with self._transaction() as conn:
            conn.execute(_IMAGES_SCHEMA)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))

    @classmethod
    def _lock(cls, path: Path, busy_timeout: float) -> "WatchlistStore":
        store = cls(path, busy_timeout, readonly=False)
        lock = Path(f"{path}.lock")
        store._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        os.chmod(lock, FILE_MODE)
        try:
            fcntl.flock(store._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(store._lock_fd)
            store._lock_fd = None
            raise StoreError(f"{path} is in use by another process (stop the server to write to it)") from exc
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

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
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
        A SQLite failure rolls it back and surfaces as :class:`StoreFailure`."""
        if self._writer is None:
            raise StoreError(f"{self.path} is open read-only")
        with self._write_lock:
            conn = self._writer
            self._failing_as_store(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
                if count:
                    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'change_seq'")
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the failure being raised already says the write did not happen
                if isinstance(exc, sqlite3.Error):
                    raise StoreFailure(f"writing {self.path} failed: {exc}") from exc
                raise

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
        return found

    def watchlists(self) -> list[Watchlist]:
        """Every watch-list with how many subjects and templates it holds."""
        with self._reading() as conn:
            rows = conn.execute(_WATCHLIST_QUERY + " ORDER BY w.name").fetchall()
        return [_watchlist(row) for row in rows]

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
            try:
                cursor = conn.execute(
                    "INSERT INTO subjects (watchlist, subject_id, external_ref, reason, source_agency, created_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (entry.watchlist, entry.subject_id, entry.external_ref, entry.reason, entry.source_agency,
                     created, _epoch(entry.expires_at)),
                )
            except sqlite3.IntegrityError as exc:
                raise VerifierError(
                    Reason.SUBJECT_EXISTS, f"subject {entry.subject_id!r} is already in watch-list {entry.watchlist!r}",
                    watchlist=entry.watchlist, subject_id=entry.subject_id,
                ) from exc
            row = int(cursor.lastrowid or 0)
            conn.executemany(
                "INSERT INTO templates (subject, position, model_id, version, vector) VALUES (?, ?, ?, ?, ?)",
                [(row, i, t.model_id, t.version, t.to_bytes()) for i, t in enumerate(templates)],
            )
            conn.executemany(
                "INSERT INTO images (subject, position, sha256, size, data) VALUES (?, ?, ?, ?, ?)",
                [(row, image.position, image.sha256, image.size, image.data) for image in kept],
            )
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
            conn.execute("DELETE FROM templates WHERE subject = ?", (row,))
            conn.executemany(
                "INSERT INTO templates (subject, position, model_id, version, vector) VALUES (?, ?, ?, ?, ?)",
                [(row, position, t.model_id, t.version, t.to_bytes()) for position, t in sorted(templates.items())],
            )

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
            names = [name for (name,) in conn.execute("SELECT name FROM watchlists")]
            found = conn.execute(
                "SELECT s.watchlist, t.subject, t.position, t.version, t.vector, s.subject_id"
                " FROM templates t JOIN subjects s ON s.id = t.subject"
                " WHERE t.model_id = ? AND (s.expires_at IS NULL OR s.expires_at > ?) ORDER BY s.watchlist",
                (spec.model_id, now),
            ).fetchall()
        good, quarantined = _checked(found, spec.dimension)
        grouped: dict[str, list[tuple]] = {name: [] for name in names}
        for record in good:
            grouped[record[0]].append(record)
        result = {}
        for name, records in grouped.items():
            vectors = np.frombuffer(b"".join(r[4] for r in records), dtype="<f4").astype(np.float32)
            result[name] = SearchableTemplates(
                rows=np.array([r[1] for r in records], dtype=np.int64),
                positions=np.array([r[2] for r in records], dtype=np.int64),
                vectors=vectors.reshape(len(records), spec.dimension),
            )
        return result, quarantined

    def quarantined(self, spec: TemplateSpec) -> list[QuarantinedTemplate]:
        """Every stored row of ``spec``'s model that fails the template checks, expired or not."""
        with self._reading() as conn:
            found = conn.execute(
                "SELECT s.watchlist, t.subject, t.position, t.version, t.vector, s.subject_id"
                " FROM templates t JOIN subjects s ON s.id = t.subject WHERE t.model_id = ?",
                (spec.model_id,),
            ).fetchall()
        return _checked(found, spec.dimension)[1]

    def expiries(self) -> dict[int, float]:
        """Row to expiry time (epoch seconds) of every subject that has one."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT id, expires_at FROM subjects WHERE expires_at IS NOT NULL"))

    def template_models(self) -> dict[str, int]:
        """How many templates each model made: those of another model cannot be searched."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT model_id, COUNT(*) FROM templates GROUP BY model_id"))
