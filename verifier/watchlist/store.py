"""The watch-list store: SQLite in WAL mode, the source of truth.

Every write is one transaction, committed with ``synchronous=FULL`` before the
call returns: an acknowledged enrolment survives a killed process or a power
cut, and a subject is stored with all its templates or not at all. Each commit
bumps a change sequence number; a saved search index records the number it was
built at and is trusted only while the store has not moved on.

One process writes a store (it holds an exclusive lock on a file beside it, so
two servers cannot each keep their own index of one store); other processes
may open it read-only, for export and statistics.
"""

from __future__ import annotations

import fcntl
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
from verifier.templates import Template

SCHEMA_VERSION = 1

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

_SUBJECT_COLUMNS = (
    "s.id, s.watchlist, s.subject_id, s.external_ref, s.reason, s.source_agency, s.created_at, s.expires_at, "
    "(SELECT COUNT(*) FROM templates t WHERE t.subject = s.id), "
    "(SELECT GROUP_CONCAT(DISTINCT t.model_id) FROM templates t WHERE t.subject = s.id)"
)


class StoreError(Exception):
    """The store cannot be opened: missing, of another schema, or held by another process."""


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

    def expired(self, now: float) -> bool:
        return self.entry.expires_at is not None and self.entry.expires_at.timestamp() <= now


@dataclass(frozen=True)
class SearchableTemplates:
    """The live templates of one watch-list, ready for the index."""

    rows: np.ndarray
    positions: np.ndarray
    vectors: np.ndarray


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _subject(row: tuple) -> Subject:
    key, watchlist, subject_id, external_ref, reason, source, created, expires, count, models = row
    entry = SubjectEntry(watchlist, subject_id, reason, source, external_ref, _moment(expires))
    model_ids = tuple(sorted(models.split(","))) if models else ()
    return Subject(entry, key, datetime.fromtimestamp(created, UTC), count, model_ids)


def _find(conn: sqlite3.Connection, watchlist: str, subject_id: str) -> Subject:
    found = conn.execute(
        f"SELECT {_SUBJECT_COLUMNS} FROM subjects s WHERE s.watchlist = ? AND s.subject_id = ?", (watchlist, subject_id)
    ).fetchone()
    if found is None:
        raise VerifierError(
            Reason.SUBJECT_NOT_FOUND, f"no subject {subject_id!r} in watch-list {watchlist!r}",
            watchlist=watchlist, subject_id=subject_id,
        )
    return _subject(found)


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
    def open(cls, path: Path, busy_timeout: float) -> "WatchlistStore":
        """Open (creating if needed) the store for writing; one process at a time."""
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path, busy_timeout, readonly=False)
        store._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(store._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(store._lock_fd)
            raise StoreError(f"{path} is in use by another process (stop the server to write to it)") from exc
        store._writer = store._connect()
        store._writer.execute("PRAGMA journal_mode=WAL")
        store._writer.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        with store._transaction(count=False) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", SCHEMA_VERSION), ("store_id", uuid.uuid4().hex), ("change_seq", 0)],
            )
        store._check_schema()
        return store

    @classmethod
    def open_readonly(cls, path: Path, busy_timeout: float) -> "WatchlistStore":
        """Open an existing store to read, beside a process that may be writing it."""
        if not path.exists():
            raise StoreError(f"no watch-list store at {path}")
        store = cls(path, busy_timeout, readonly=True)
        store._check_schema()
        return store

    def _connect(self) -> sqlite3.Connection:
        target = f"file:{self.path}?mode=ro" if self.readonly else str(self.path)
        conn = sqlite3.connect(
            target, uri=self.readonly, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _check_schema(self) -> None:
        with self._reading() as conn:
            found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is None or found[0] != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema {found and found[0]}, this program reads {SCHEMA_VERSION}")

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
            conn = self._connect()
        try:
            yield conn
        finally:
            self._idle.put(conn)

    @contextmanager
    def _transaction(self, count: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; committed (and on disk) when the block ends."""
        if self._writer is None:
            raise StoreError(f"{self.path} is open read-only")
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                if count:
                    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'change_seq'")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

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
        try:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO watchlists (name, description, created_at) VALUES (?, ?, ?)",
                    (name, description, created),
                )
        except sqlite3.IntegrityError as exc:
            raise VerifierError(Reason.WATCHLIST_EXISTS, f"watch-list {name!r} exists", watchlist=name) from exc
        return Watchlist(name, description, datetime.fromtimestamp(created, UTC))

    def watchlists(self) -> list[Watchlist]:
        """Every watch-list with how many subjects and templates it holds."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT w.name, w.description, w.created_at,"
                " (SELECT COUNT(*) FROM subjects s WHERE s.watchlist = w.name),"
                " (SELECT COUNT(*) FROM templates t JOIN subjects s ON s.id = t.subject WHERE s.watchlist = w.name)"
                " FROM watchlists w ORDER BY w.name"
            ).fetchall()
        return [Watchlist(n, d, datetime.fromtimestamp(c, UTC), s, t) for n, d, c, s, t in rows]

    def watchlist(self, name: str) -> Watchlist:
        for found in self.watchlists():
            if found.name == name:
                return found
        raise _no_watchlist(name)

    def add_subject(self, entry: SubjectEntry, templates: list[Template]) -> Subject:
        """Store a subject with all its templates in one transaction."""
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
        models = tuple(sorted({t.model_id for t in templates}))
        return Subject(entry, row, datetime.fromtimestamp(created, UTC), len(templates), models)

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

    def searchable(self, model_id: str, now: float) -> dict[str, SearchableTemplates]:
        """For each watch-list, the templates of ``model_id`` of subjects not expired at ``now``."""
        with self._reading() as conn:
            names = [name for (name,) in conn.execute("SELECT name FROM watchlists")]
            found = conn.execute(
                "SELECT s.watchlist, t.subject, t.position, t.vector"
                " FROM templates t JOIN subjects s ON s.id = t.subject"
                " WHERE t.model_id = ? AND (s.expires_at IS NULL OR s.expires_at > ?) ORDER BY s.watchlist",
                (model_id, now),
            ).fetchall()
        grouped: dict[str, list[tuple]] = {name: [] for name in names}
        for record in found:
            grouped[record[0]].append(record)
        result = {}
        for name, records in grouped.items():
            vectors = np.frombuffer(b"".join(r[3] for r in records), dtype="<f4").astype(np.float32)
            result[name] = SearchableTemplates(
                rows=np.array([r[1] for r in records], dtype=np.int64),
                positions=np.array([r[2] for r in records], dtype=np.int64),
                vectors=vectors.reshape(len(records), -1) if records else vectors.reshape(0, 0),
            )
        return result

    def expiries(self) -> dict[int, float]:
        """Row to expiry time (epoch seconds) of every subject that has one."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT id, expires_at FROM subjects WHERE expires_at IS NOT NULL"))

    def template_models(self) -> dict[str, int]:
        """How many templates each model made: those of another model cannot be searched."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT model_id, COUNT(*) FROM templates GROUP BY model_id"))
