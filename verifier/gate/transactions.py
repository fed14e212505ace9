"""Answers kept by transaction id, so a retried call gets the same answer.

A kiosk whose call timed out on the network retries it with the same gate
and transaction id; the traveller must not get a second, possibly different,
decision, nor the audit trail a second record. The first answer is stored
(opaque bytes: the transport's serialised response) in a small SQLite table
beside the audit trail, kept ``retention_seconds`` and at most
``max_entries`` rows (the oldest dropped first), so it cannot grow without
bound. A request with a reused id but different content is refused.

Concurrent duplicates wait for the first to finish: :meth:`claim` hands out
the stored answer, or the right (and duty) to :meth:`store` one.

A storage fault (disk full, I/O error, read-only) reading or writing an
answer is :class:`AnswerStoreFault`, and the store is then unavailable (its
listeners are told: the Gate's health) until :meth:`probe`, called by the
server every ``server.storage_retry_seconds``, writes on a fresh connection.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from verifier.errors import Reason, VerifierError
from verifier.storage.faults import fault_of

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    gate_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    created REAL NOT NULL,
    answer BLOB NOT NULL,
    PRIMARY KEY (gate_id, transaction_id)
);
CREATE INDEX IF NOT EXISTS answers_created ON answers(created);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
"""


class AnswerStoreFault(Exception):
    """The answer store cannot be read or written; ``fault`` names how (see verifier.storage.faults)."""

    def __init__(self, message: str, fault: str) -> None:
        super().__init__(message)
        self.fault = fault


def digest(*parts: bytes) -> str:
    """What identifies a request's content (frames, reference, attempt)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


class TransactionStore:
    """Thread-safe; one per server process."""

    def __init__(self, path: Path, retention_seconds: float, max_entries: int) -> None:
        # Owner-only (README, Security); SQLite gives its WAL the file's mode.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.retention = retention_seconds
        self.max_entries = max_entries
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], threading.Event] = {}
        self._fault: AnswerStoreFault | None = None
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def available(self) -> bool:
        """False from a failed read or write until :meth:`probe` succeeds."""
        return self._fault is None

    def on_availability(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def _failed(self, error: sqlite3.Error, doing: str) -> AnswerStoreFault:
        """Under the lock: roll back, mark the store unavailable; the fault to raise."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the fault being raised already says nothing was stored
        fault = AnswerStoreFault(f"the gate's answer store {self.path} could not be {doing}: {error}", fault_of(error))
        if self._fault is None:
            self._fault = fault
            log.error("%s; the Gate refers every traveller (STORAGE_FAULT) until it can", fault)
            self._tell(False)
        return fault

    def _tell(self, available: bool) -> None:
        for listener in self._listeners:
            listener(available)

    def probe(self) -> bool:
        """While unavailable: a write on a fresh connection; available again once
        it commits. Whether the store is available."""
        with self._lock:
            if self._fault is None:
                return True
            try:
                fresh = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                try:
                    fresh.execute("PRAGMA journal_mode=WAL")
                    fresh.executescript(_SCHEMA)
                    fresh.execute("BEGIN IMMEDIATE")
                    fresh.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))
                    fresh.execute("COMMIT")
                except sqlite3.Error:
                    fresh.close()
                    raise
            except sqlite3.Error:
                return False
            old, self._db = self._db, fresh
            old.close()
            self._fault = None
        log.info("the gate's answer store %s is written again", self.path)
        self._tell(True)
        return True

    @contextmanager
    def claim(self, gate_id: str, transaction_id: str, request_digest: str) -> Iterator[bytes | None]:
        """The stored answer for these ids, or None: then the caller computes
        the answer and :meth:`store`s it inside the block. A duplicate arriving
        meanwhile waits for it."""
        key = (gate_id, transaction_id)
        while True:
            with self._lock:
                stored = self._lookup(key, request_digest)
                waiting = None if stored is not None else self._in_flight.get(key)
                if stored is None and waiting is None:
                    done = self._in_flight[key] = threading.Event()
                    break
            if stored is not None:
                yield stored
                return
            waiting.wait()
        try:
            yield None
        finally:
            with self._lock:
                del self._in_flight[key]
            done.set()

    def store(self, gate_id: str, transaction_id: str, request_digest: str, answer: bytes) -> None:
        """Keep ``answer`` for these ids; :class:`AnswerStoreFault` when it cannot be."""
        now = time.time()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                                 (gate_id, transaction_id, request_digest, now, answer))
                self._db.execute("DELETE FROM answers WHERE created < ?", (now - self.retention,))
                self._db.execute(
                    "DELETE FROM answers WHERE rowid IN (SELECT rowid FROM answers ORDER BY created DESC "
                    "LIMIT -1 OFFSET ?)", (self.max_entries,))
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                raise self._failed(error, "written") from error
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _lookup(self, key: tuple[str, str], request_digest: str) -> bytes | None:
        try:
            row = self._db.execute(
                "SELECT request_digest, created, answer FROM answers WHERE gate_id = ? AND transaction_id = ?", key
            ).fetchone()
        except sqlite3.Error as error:
            raise self._failed(error, "read") from error
        if row is None or row[1] < time.time() - self.retention:
            return None
        if row[0] != request_digest:
            raise VerifierError(Reason.FIELD_INVALID, "this transaction id was already used for another request",
                                field="transaction_id")
        return bytes(row[2])

    def close(self) -> None:
        self._db.close()
