"""The audit trail: an append-only, hash-chained record of every watch-list
change and every decision, with who asked and what was decided.

Storage is one SQLite table in WAL mode with ``synchronous=FULL``, not a JSON
Lines file: an append is one transaction, so a crash leaves whole records or
none (no torn last line to repair); the Audit service and the CLI read it by
time, caller, subject or outcome through indexes while the server writes; and
several processes (the server, an offline ``watchlist import``) can append to
one chain, because each transaction reads the chain's head under SQLite's
write lock. Triggers refuse UPDATE and DELETE, which stops mistakes, not an
attacker: tampering is caught by the chain.

Each record holds the SHA-256 of the previous record and its own hash over a
canonical JSON of all its fields, sequence included, so an edited, deleted,
inserted or reordered record breaks the chain at that record
(:func:`verify_chain`). The chain cannot, by itself, show that its newest
records were cut off or that the whole file was rewritten: an auditor keeps
the head hash that ``verifier audit verify`` prints and checks it later.

Durability: a change is appended synchronously (:meth:`AuditLog.append_change`
returns only once the record is on disk); decisions are queued and written by
a background flusher at most ``commit_window_seconds`` later, in one
transaction per batch (group commit). A crash loses at most that window of
decision records, never a change record. Records never hold image bytes or
templates, only ids, scores, thresholds and the model id.

Storage faults (a full disk, an I/O error, a read-only file system): a write
that fails leaves no record behind (SQLite rolls the transaction back, and a
log frame without its commit is never read, so the chain has no torn tail).
The trail is then *unavailable*: every audited call is refused with
STORE_UNAVAILABLE (the detail ``fault`` says which), listeners are told (the
server's health), and the decisions already answered but not yet written are
kept in memory. Every ``retry_seconds`` the flusher tries again, on a fresh
connection, to write them followed by one record of the outage (from when,
why, and how many calls were refused meanwhile); once that commits the trail
is available again, without a restart.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from verifier.errors import Reason, VerifierError
from verifier.storage.faults import fault_of

if TYPE_CHECKING:
    from verifier.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    identity TEXT NOT NULL,
    role TEXT NOT NULL,
    rpc TEXT NOT NULL,
    kind TEXT NOT NULL,
    targets TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    decision TEXT NOT NULL,
    scores TEXT NOT NULL,
    threshold REAL,
    rate REAL,
    model_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records(time);
CREATE INDEX IF NOT EXISTS records_identity ON records(identity);
CREATE INDEX IF NOT EXISTS records_outcome ON records(outcome);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""

_COLUMNS = ("seq", "time", "identity", "role", "rpc", "kind", "targets", "outcome", "reason", "decision", "scores",
            "threshold", "rate", "model_id", "request_id", "prev_hash", "hash")

# Record kinds: a change to a watch-list, a decision about a traveller, a call
# refused before it ran (wrong role, no identity).
CHANGE, DECISION, REFUSAL = "change", "decision", "refusal"


@dataclass(frozen=True)
class Entry:
    """What happened, as the caller of the log describes it (no sequence, time or hashes yet).

    ``outcome`` is ``OK``, ``STARTED`` (a change about to be applied) or the
    gRPC status name of a failure, with the domain ``reason``; ``targets`` are
    ``watchlist`` or ``watchlist/subject`` ids; ``rate`` is the FMR or FPIR the
    ``threshold`` stands for.
    """

    identity: str
    role: str
    rpc: str
    kind: str
    outcome: str
    reason: str = ""
    targets: tuple[str, ...] = ()
    decision: str = ""
    scores: tuple[float, ...] = ()
    threshold: float | None = None
    rate: float | None = None
    model_id: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class Record(Entry):
    """An entry as stored: numbered, timed and chained."""

    seq: int = 0
    time: str = ""
    prev_hash: str = ""
    hash: str = ""

    def canonical(self) -> bytes:
        """The bytes the hash covers: every field but the hash, as sorted, compact JSON."""
        fields = asdict(self)
        del fields["hash"]
        fields["targets"] = list(self.targets)
        fields["scores"] = list(self.scores)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def as_json(self) -> dict[str, object]:
        fields = asdict(self)
        fields["targets"], fields["scores"] = list(self.targets), list(self.scores)
        return fields


def _record_from_row(row: sqlite3.Row | tuple) -> Record:
    values = dict(zip(_COLUMNS, row))
    values["targets"] = tuple(json.loads(values["targets"]))
    values["scores"] = tuple(json.loads(values["scores"]))
    return Record(**values)


def _row_of(record: Record) -> tuple:
    values = asdict(record)
    values["targets"] = json.dumps(list(record.targets))
    values["scores"] = json.dumps(list(record.scores))
    return tuple(values[c] for c in _COLUMNS)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def unavailable(message: str, fault: str = "") -> VerifierError:
    """The refusal for any call whose audit record cannot be written: nothing
    is decided or changed off the record."""
    details = {"store": "audit"} | ({"fault": fault} if fault else {})
    return VerifierError(Reason.STORE_UNAVAILABLE, message, **details)


@dataclass
class _Outage:
    """Why and since when the trail cannot be written, and the calls refused meanwhile."""

    error: str
    fault: str
    since: str
    refused: int = 0


class AuditLog:
    """The writer of one audit trail; thread-safe; one per process."""

    def __init__(self, path: Path, commit_window_seconds: float, busy_timeout_seconds: float,
                 retry_seconds: float = 1.0) -> None:
        # Owner-only (README, Security); SQLite gives its WAL the file's mode.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.window = commit_window_seconds
        self.retry_seconds = retry_seconds
        self._busy_timeout = busy_timeout_seconds
        self._db = sqlite3.connect(path, timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=False)
        os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._pending: list[Record] = []
        self._queue_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._outage: _Outage | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self._flusher = threading.Thread(target=self._flush_loop, name="audit-flusher", daemon=True)
        self._flusher.start()

    @classmethod
    def for_settings(cls, settings: "Settings") -> "AuditLog":
        """The configured trail (``audit.path`` under the data folder)."""
        audit = settings.audit
        return cls(audit.file(settings.data_dir), audit.commit_window_seconds, audit.busy_timeout_seconds,
                   settings.server.storage_retry_seconds)

    @property
    def available(self) -> bool:
        """Whether records can be written now (False from a failed write until a retry succeeds)."""
        return self._outage is None

    def on_availability(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener`` with every change of :attr:`available` (the server's health)."""
        self._listeners.append(listener)

    def require_available(self) -> None:
        """Refuse (STORE_UNAVAILABLE) a call whose record could not be written now."""
        with self._queue_lock:
            self._check()

    def append_change(self, entry: Entry) -> Record:
        """Append ``entry`` and return once it is durable (with any decisions
        queued before it, which keep their place in the chain)."""
        with self._write_lock:
            with self._queue_lock:
                self._check()
                queued, self._pending = self._pending, []
            return self._write(queued, [Record(**asdict(entry), time=_now())])[-1]

    def append_decision(self, entry: Entry) -> None:
        """Queue ``entry``; the flusher makes it durable within the commit window."""
        with self._queue_lock:
            self._check()
            self._pending.append(Record(**asdict(entry), time=_now()))

    def flush(self) -> None:
        """Write every queued decision now."""
        with self._write_lock:
            with self._queue_lock:
                self._check()
                queued, self._pending = self._pending, []
            if queued:
                self._write(queued, [])

    def close(self) -> None:
        """Write what is queued, stop the flusher, close the file."""
        self._closing = True
        self._wake.set()
        self._flusher.join()
        try:
            if self._outage is not None:
                self._resume()
            self.flush()
        except VerifierError:
            log.error("the audit trail is still unavailable at shutdown: %d decision records answered but not "
                      "written are lost", len(self._pending))
        finally:
            self._db.close()

    def _check(self) -> None:
        """Under the queue lock: refuse while the trail is unavailable, counting the refusal."""
        outage = self._outage
        if outage is not None:
            outage.refused += 1
            raise unavailable(f"the audit trail cannot be written ({outage.fault}: {outage.error}); "
                              "refusing off the record", outage.fault)

    def _flush_loop(self) -> None:
        while not self._closing:
            self._wake.wait(self.window if self._outage is None else self.retry_seconds)
            try:
                if self._outage is None:
                    self.flush()
                elif not self._closing:
                    self._resume()
            except VerifierError:
                continue  # unavailable: logged when it began; tried again after retry_seconds
            except Exception as error:  # noqa: BLE001 - never let the flusher die: the trail is retried
                log.exception("audit flush failed")
                self._fail(error)

    def _fail(self, error: BaseException) -> _Outage:
        """Mark the trail unavailable (once per outage), and tell the listeners."""
        with self._queue_lock:
            began = self._outage is None
            if began:
                self._outage = _Outage(str(error), fault_of(error), _now())
            outage = self._outage
        if began:
            log.error("the audit trail %s cannot be written (%s: %s): audited calls are refused until it can; "
                      "retrying every %.1f s", self.path, outage.fault, outage.error, self.retry_seconds)
            self._tell(False)
        return outage  # type: ignore[return-value]

    def _tell(self, available: bool) -> None:
        for listener in self._listeners:
            try:
                listener(available)
            except Exception:  # noqa: BLE001 - a listener must not stop the trail
                log.exception("audit availability listener failed")

    def _resume(self) -> None:
        """Try the trail again on a fresh connection: the decisions kept since
        the fault, then one record of the outage; available again once they commit."""
        with self._write_lock:
            outage = self._outage
            if outage is None:
                return
            self._reopen()
            with self._queue_lock:
                queued, self._pending = self._pending, []
                refused = outage.refused
            record = Record(
                identity="audit-trail", role="system", rpc="audit.outage", kind=REFUSAL, outcome="UNAVAILABLE",
                reason=Reason.STORE_UNAVAILABLE.value, time=_now(),
                decision=f"the trail could not be written from {outage.since} ({outage.fault}: {outage.error}); "
                         f"{refused} audited calls refused meanwhile",
            )
            self._write(queued, [record], resuming=True)
            with self._queue_lock:
                self._outage = None
                late = outage.refused - refused
        log.info("the audit trail %s is written again; %d calls were refused while it could not be%s", self.path,
                 outage.refused, f" ({late} after the outage record)" if late else "")
        self._tell(True)

    def _reopen(self) -> None:
        """A fresh connection to the trail (never creating it: ``mode=rw``), for
        a file system remounted or a file made writable again."""
        try:
            fresh = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=self._busy_timeout,
                                    isolation_level=None, check_same_thread=False)
            fresh.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as error:
            if self._outage is not None:
                self._outage.error, self._outage.fault = str(error), fault_of(error)
            raise unavailable(f"the audit trail cannot be opened: {error}", fault_of(error)) from error
        old, self._db = self._db, fresh
        old.close()

    def _write(self, queued: list[Record], new: list[Record], resuming: bool = False) -> list[Record]:
        """Chain ``queued`` (decisions already answered) and ``new`` onto the head
        read under the write lock, and commit them. On failure nothing is
        written, ``queued`` is kept to be written later, and the trail is
        unavailable (or stays so, ``resuming``)."""
        batch = queued + new
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                head = self._db.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = head if head is not None else (0, GENESIS)
                chained = []
                for record in batch:
                    seq += 1
                    linked = replace(record, seq=seq, prev_hash=prev)
                    linked = replace(linked, hash=linked.computed_hash())
                    prev = linked.hash
                    chained.append(linked)
                placeholders = ", ".join("?" * len(_COLUMNS))
                self._db.executemany(
                    f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES ({placeholders})", map(_row_of, chained)
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            with self._queue_lock:
                self._pending[:0] = queued
            if resuming and self._outage is not None:
                self._outage.error, self._outage.fault = str(error), fault_of(error)  # what it is now
            else:
                outage = self._fail(error)
                with self._queue_lock:
                    outage.refused += len(new)  # the change whose record failed is refused
            raise unavailable(f"the audit trail could not be written: {error}", fault_of(error)) from error
        return chained


@dataclass(frozen=True)
class RecordFilter:
    """Which records to read; every field left empty matches everything."""

    since: datetime | None = None
    until: datetime | None = None
    identity: str = ""
    subject: str = ""
    outcome: str = ""
    after_seq: int = 0
    limit: int | None = None


@dataclass
class ChainReport:
    """What :func:`verify_chain` found: the records read, the head, and the first bad record."""

    count: int = 0
    head: str = GENESIS
    bad_seq: int | None = None
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.bad_seq is None


def _open_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no audit trail at {path}")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


def read_records(path: Path, where: RecordFilter) -> Iterator[Record]:
    """Records matching ``where``, oldest first; reads beside a writing server."""
    clauses, params = ["seq > ?"], [where.after_seq]
    if where.since is not None:
        clauses.append("time >= ?")
        params.append(where.since.astimezone(UTC).isoformat(timespec="microseconds"))
    if where.until is not None:
        clauses.append("time < ?")
        params.append(where.until.astimezone(UTC).isoformat(timespec="microseconds"))
    if where.identity:
        clauses.append("identity = ?")
        params.append(where.identity)
    if where.outcome:
        clauses.append("outcome = ?")
        params.append(where.outcome)
    if where.subject:
        clauses.append("EXISTS (SELECT 1 FROM json_each(targets) WHERE value = ? OR value LIKE ? ESCAPE '\\')")
        escaped = where.subject.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params += [where.subject, f"%/{escaped}"]
    sql = f"SELECT {', '.join(_COLUMNS)} FROM records WHERE {' AND '.join(clauses)} ORDER BY seq"
    if where.limit is not None:
        sql += f" LIMIT {int(where.limit)}"
    db = _open_readonly(path)
    try:
        for row in db.execute(sql, params):
            yield _record_from_row(row)
    finally:
        db.close()


def verify_chain(path: Path) -> ChainReport:
    """Walk the whole trail in storage order and stop at the first record that
    is out of sequence, does not follow its predecessor's hash, or whose
    content does not match its own hash."""
    report = ChainReport()
    db = _open_readonly(path)
    try:
        prev = GENESIS
        for position, row in enumerate(db.execute(f"SELECT {', '.join(_COLUMNS)} FROM records ORDER BY rowid"), 1):
            record = _record_from_row(row)
            if record.seq != position:
                report.bad_seq, report.problem = record.seq, f"out of sequence (found at position {position})"
            elif record.prev_hash != prev:
                report.bad_seq, report.problem = record.seq, f"does not follow record {position - 1} (chain broken)"
            elif record.computed_hash() != record.hash:
                report.bad_seq, report.problem = record.seq, "content does not match its hash (edited)"
            if report.bad_seq is not None:
                return report
            prev = report.head = record.hash
            report.count = position
    finally:
        db.close()
    return report


def local_operator() -> tuple[str, str]:
    """The identity and role of whoever runs an offline command on this machine."""
    return f"local-operator:{getpass.getuser()}", "operator"


def recorded_change(audit: AuditLog, entry: Entry, apply: Callable[[], T]) -> T:
    """Run ``apply`` (a change made outside the server, such as an offline
    import) on the record: STARTED durably before it, then OK, or FAILED with
    the domain reason, durably before returning."""
    audit.append_change(replace(entry, outcome="STARTED"))
    try:
        result = apply()
    except VerifierError as error:
        audit.append_change(replace(entry, outcome="FAILED", reason=error.reason.value))
        raise
    audit.append_change(replace(entry, outcome="OK"))
    return result
