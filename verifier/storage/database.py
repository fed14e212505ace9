"""The database engine: one SQLite file in WAL mode, whatever it stores.

What is stored is the business of the packages above (the watch-lists' tables,
the registry's): each declares its tables (:class:`Tables`) and this module
creates, upgrades and checks them. This module owns the file's lifecycle,
its lock, its connections, its transactions, backups and pinned snapshots;
the change feed every write goes on is :mod:`verifier.storage.feed`.

Every write is one transaction, committed with ``synchronous=FULL`` before the
call returns: an acknowledged change survives a killed process or a power
cut, and it is wholly stored or not at all. Each commit bumps a change
sequence number; a saved search index records the number it was built at and
is trusted only while the store has not moved on.

One process writes a store (it holds an exclusive lock on a file beside it, so
two servers cannot each keep their own index of one store); other processes
may open it read-only, for export and statistics.

A store is created only by an explicit step (:meth:`Database.create`): opening
one that is missing is an error, never a new empty store, since an empty
watch-list would silently clear every traveller. Any SQLite failure at run
time (disk full, read-only, corrupt) surfaces as :class:`StoreFailure`, so
that the service above can stop serving with a reason while the rest of the
server goes on. Files are created owner-only (0600, directories 0700): they
hold biometric templates.

A store open for writing is watched: the files it opened (the database, its
write-ahead log and shared memory, its lock) must still be the files at their
paths, and the database at the path must still hold the store id it was
opened with (:meth:`Database.check_identity`). A store deleted, moved or
replaced under a running process is otherwise written on, through the open
descriptors, into files no one will open again: every write checks before it
commits and again before it is acknowledged, every read checks before it
answers, and the service above checks every second. A store found not to be
itself is :class:`StoreMissing`; its connections are then abandoned, never
closed, because closing the last one checkpoints and deletes the log *by
name*, which may by then be another store's.

Schema versions: each owner's tables carry their version in the ``meta``
table under a key of their own (the watch-lists' is ``schema_version``, as it
has always been). A file of an older version is upgraded when first opened
for writing, one transaction per step; a newer one, or an older one opened
read-only, is refused. Tables an owner added without a new version (and
every table, on a file that lacks it) are created when a store is opened for
writing.
"""

from __future__ import annotations

import fcntl
import os
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self, TypeVar

from verifier.storage.faults import FileIdentity, StoreError, StoreFailure, StoreMissing
from verifier.storage.feed import FEED_SCHEMA, ChangeFeed, FeedPosition, position_in

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700

# The engine's own table: the store's id, its change sequence and the feed's
# epochs, and each owner's schema version.
_META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);"

# The files beside the database that SQLite keeps open while a store is open:
# a write into any of them, once it is no longer the file at its path, is lost.
_OPEN_FILES = ("", "-wal", "-shm")
# Connections of stores found replaced or removed: kept referenced (never
# closed, never collected, which would close them) until the process ends.
_ABANDONED: list[sqlite3.Connection] = []

_T = TypeVar("_T")


@dataclass(frozen=True)
class Tables:
    """One owner's tables in the database file.

    ``create`` makes them as this program keeps them, with ``CREATE ... IF NOT
    EXISTS`` only (it runs at every open for writing, so a table added later
    appears in an older file). With ``version_key``, the ``meta`` row under
    that key holds their version: ``upgrades[v]`` takes a file from version v
    to v + 1, and a version this program does not read is refused."""

    owner: str
    create: str
    version_key: str | None = None
    version: int = 1
    upgrades: Mapping[int, str] = field(default_factory=dict)
    # Said to an operator whose read-only open found an older version.
    upgrade_hint: str = ""


def _statements(script: str) -> Iterator[str]:
    """The statements of a script of ``CREATE`` statements, for ``execute`` one at a time:
    ``executescript`` would commit the transaction they belong to."""
    return (statement for statement in script.split(";") if statement.strip())


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


@dataclass(frozen=True)
class PinnedStore:
    """A store held at one change by an open read transaction (see :meth:`Database.pinned`)."""

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


class Database(ChangeFeed):
    """One SQLite file: the tables of :attr:`TABLES` and the change feed.

    Writes go through one connection, one at a time; reads use a small pool of
    their own connections, which WAL lets run beside a write. A store of some
    kind (the watch-list store) subclasses it, naming its tables and itself.
    """

    # The tables a store of this kind holds from its creation (others join
    # later with :meth:`add_tables`), and what the store is called to an operator.
    TABLES: ClassVar[tuple[Tables, ...]] = ()
    NAME: ClassVar[str] = "store"
    MISSING_HINT: ClassVar[str] = "create it, or restore the file from its backup"

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
    def create(cls, path: Path, busy_timeout: float) -> Self:
        """Create a new, empty store at ``path`` and open it for writing; refuses
        to touch a file that is already there."""
        private_directory(path.parent)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError as exc:
            raise StoreError(f"{path} exists; a store is created once") from exc
        store = cls._lock(path, busy_timeout)
        try:
            opened = store._start_writer()
            with store._transaction(count=False) as conn:
                conn.execute(_META_SCHEMA)
                for tables in cls.TABLES:
                    for statement in _statements(tables.create):
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("store_id", uuid.uuid4().hex), ("change_seq", 0)]
                    + [(t.version_key, t.version) for t in cls.TABLES if t.version_key is not None],
                )
            store._ensure_feed()
            store._remember_identity(opened)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, path: Path, busy_timeout: float) -> Self:
        """Open an existing store for writing, upgraded to this program's tables;
        one process at a time. A missing store is :class:`StoreMissing`, never created here."""
        if not path.is_file():
            raise StoreMissing(f"no {cls.NAME} at {path}: {cls.MISSING_HINT}")
        store = cls._lock(path, busy_timeout)
        try:
            for owned in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                if owned.exists():
                    os.chmod(owned, FILE_MODE)
            opened = store._start_writer()
            for tables in cls.TABLES:
                store._upgrade(tables)
            store._check_schema()
            store._ensure_feed()
            for tables in cls.TABLES:
                store.add_tables(tables)
            store._remember_identity(opened)
        except sqlite3.Error as exc:
            store.close()
            raise StoreFailure(f"{path} cannot be read as a {cls.NAME}: {exc}") from exc
        except OSError as exc:
            store.close()
            raise StoreFailure(f"{path} cannot be opened: {exc}") from exc
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, path: Path, busy_timeout: float) -> Self:
        """Open an existing store to read, beside a process that may be writing it."""
        if not path.is_file():
            raise StoreMissing(f"no {cls.NAME} at {path}")
        store = cls(path, busy_timeout, readonly=True)
        try:
            store._check_schema()
        except sqlite3.Error as exc:
            store.close()
            raise StoreFailure(f"{path} cannot be read as a {cls.NAME}: {exc}") from exc
        return store

    def _start_writer(self) -> FileIdentity | None:
        """Open the writing connection, in WAL mode; the file it opened (see :meth:`_remember_identity`)."""
        opened = FileIdentity.at(self.path)
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        return opened

    def _version(self, conn: sqlite3.Connection, tables: Tables) -> object:
        found = conn.execute("SELECT value FROM meta WHERE key = ?", (tables.version_key,)).fetchone()
        return None if found is None else found[0]

    def _upgrade(self, tables: Tables) -> None:
        """Bring ``tables`` of an older version up to this program's, one
        transaction a step; any other version is left for :meth:`_check_schema` to refuse."""
        if tables.version_key is None:
            return
        while True:
            with self._transaction(count=False) as conn:
                found = self._version(conn, tables)
                if not isinstance(found, int) or found not in tables.upgrades or found >= tables.version:
                    return
                for statement in _statements(tables.upgrades[found]):
                    conn.execute(statement)
                conn.execute("UPDATE meta SET value = ? WHERE key = ?", (found + 1, tables.version_key))

    def _check_schema(self) -> None:
        with self._reading() as conn:
            found = [(tables, self._version(conn, tables)) for tables in self.TABLES if tables.version_key is not None]
        for tables, version in found:
            if version != tables.version:
                older = isinstance(version, int) and version < tables.version and self.readonly
                hint = f" ({tables.upgrade_hint})" if older and tables.upgrade_hint else ""
                raise StoreError(f"{self.path} has schema {version}, this program reads {tables.version}{hint}")

    def add_tables(self, tables: Tables) -> None:
        """Create ``tables`` where the file lacks them (a schema step, no change
        on the feed: every server adds them itself)."""
        with self._transaction(count=False) as conn:
            for statement in _statements(tables.create):
                conn.execute(statement)

    def _ensure_feed(self) -> None:
        """Add the feed's tables and meta rows if this store lacks them (a store
        made before the feed: its feed starts at its current change sequence)."""
        with self._transaction(count=False) as conn:
            for statement in _statements(FEED_SCHEMA):
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', 1)")
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('fenced_by', 0)")
            conn.execute("INSERT OR IGNORE INTO meta (key, value)"
                         " SELECT 'feed_start', value FROM meta WHERE key = 'change_seq'")

    @classmethod
    def _lock(cls, path: Path, busy_timeout: float) -> Self:
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
            f"{what} is no longer the file this server opened (removed, moved or replaced): the {self.NAME} "
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

    def _failing_as_store(self, step: Callable[[], _T]) -> _T:
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
        as :class:`StoreMissing`. ``count``: the block makes a change, which it
        must :meth:`record` and which goes on the feed with it."""
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
        """A write transaction for the tables of an owner sharing this file (the
        registry): it must :meth:`record` its change, which joins the feed
        (``count`` False: a schema step that is no change)."""
        return self._transaction(count)

    def reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read connection for the tables of an owner sharing this file."""
        return self._reading()

    def record(self, kind: str, payload: dict) -> None:
        """Name the change the open transaction makes: it goes on the feed with it."""
        self._pending = (kind, payload)

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database and truncate it (after an
        erasure: the erased pages must not linger in the log); False when a
        reader kept it from completing."""
        writer = self._writer
        if writer is None:
            raise StoreError(f"{self.path} is open read-only")
        with self._write_lock:
            busy, _, _ = self._failing_as_store(lambda: writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        return not busy

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

    def backup_to(self, target: Path) -> FeedPosition:
        """Copy the store, consistent at one change, to ``target`` (owner-only, synced);
        returns the feed position the copy is at."""
        with self.pinned() as pinned:
            return pinned.copy_to(target)

    @contextmanager
    def pinned(self, file_image: bool = False) -> Iterator[PinnedStore]:
        """The store as it is now, held in a read transaction for the block (writes
        go on beside it): what is copied from it is at the position it names,
        whatever was committed since. ``file_image``: also find out whether the
        database file itself is that store (:attr:`PinnedStore.file_bytes`)."""
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                position = position_in(conn)
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
        writer = self._writer
        if writer is None:
            return None
        with self._write_lock:
            busy, logged, copied = self._failing_as_store(
                lambda: writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        if busy or logged < 0 or copied != logged:
            return None
        (pages,), (page_size,) = conn.execute("PRAGMA page_count").fetchone(), conn.execute("PRAGMA page_size").fetchone()
        size = int(pages) * int(page_size)
        return size if self.path.stat().st_size >= size else None

