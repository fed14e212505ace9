"""The change feed: every committed change of a store, in order, for its replicas.

Every committed change (a transaction that bumps the change sequence) also
writes one row of ``changes`` in the same transaction: its sequence number
(global, gap-free: the sequence after the commit), the epoch it was written
in, its kind and a payload holding all that a replica needs to apply it again.
A replica applies a change only when it is the next one
(:meth:`ChangeFeed.apply_change`), in one transaction that also records it, so
applying twice is a no-op and a gap is refused. The feed's tables are added to
any store that lacks them when it is opened for writing, whatever its schema
versions (so the feed composes with the upgrades of what is stored); a
transaction that bumps the sequence without recording its change is rolled back.

Epochs and fencing: promotion begins a new epoch (:meth:`ChangeFeed.new_epoch`),
itself a change on the feed; a store shown a newer epoch (:meth:`ChangeFeed.fence`)
takes no more writes, and a replica refuses a change of an older epoch than it
has seen, so a returning old primary cannot fork the data.

The feed does not know what a change means. Each owner of tables registers
its kinds of change with their replay (:func:`register_change_kind`): the
watch-lists' in :mod:`verifier.watchlist.changes`, the registry's in
:mod:`verifier.registry.store`. A replay applies a change exactly as the
primary made it (same rows) and says what it did, for the index above the
store to follow.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from verifier.errors import Reason, VerifierError
from verifier.storage.faults import StoreError

FEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    committed_at REAL NOT NULL
);
"""

# The feed's own kind of change: a promotion.
NEW_EPOCH = "new_epoch"


@dataclass(frozen=True)
class Change:
    """One committed change, as the feed carries it: ``payload`` is canonical JSON."""

    seq: int
    epoch: int
    kind: str
    payload: bytes
    committed_at: float


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


class FeedGap(StoreError):
    """A change offered to a replica is not the next one it needs: nothing applied."""


# What replaying a change did, as its owner says it: the watch-lists' and the
# registry's replays answer with what their indexes must follow.
Replay = Callable[[sqlite3.Connection, Change], Any]
_KINDS: dict[str, Replay | None] = {NEW_EPOCH: None}


def register_change_kind(kind: str, replay: Replay) -> None:
    """Let the owner of some tables replay its own kind of change from the feed."""
    if _KINDS.get(kind, replay) is not replay:
        raise ValueError(f"the change kind {kind!r} is registered already")
    _KINDS[kind] = replay


def replay(conn: sqlite3.Connection, change: Change, nothing: Callable[[Change], Any]) -> Any:
    """Apply ``change`` by its kind's replay; a change of the feed's own (a new
    epoch) changes no table and is answered with ``nothing(change)``."""
    if change.kind not in _KINDS:
        raise StoreError(f"change {change.seq} is of a kind this program does not know: {change.kind!r}")
    found = _KINDS[change.kind]
    return nothing(change) if found is None else found(conn, change)


def encode_payload(payload: dict) -> bytes:
    """Canonical JSON: the same change is the same bytes on every store."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def next_seq(conn: sqlite3.Connection) -> int:
    """The sequence number the change of the open write transaction will have."""
    return int(conn.execute("SELECT value FROM meta WHERE key = 'change_seq'").fetchone()[0]) + 1


def redact(conn: sqlite3.Connection, seq: int, payload: dict) -> None:
    """Replace the payload of change ``seq`` already on the feed (an erasure: a
    follower that has not received it yet gets ``payload`` instead)."""
    conn.execute("UPDATE changes SET payload = ? WHERE seq = ?", (encode_payload(payload), seq))


def position_in(conn: sqlite3.Connection) -> FeedPosition:
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    seq = int(meta["change_seq"])
    last = conn.execute("SELECT epoch FROM changes WHERE seq = ?", (seq,)).fetchone()
    return FeedPosition(str(meta["store_id"]), seq, int(meta.get("epoch", 1)),
                        int(last[0]) if last else 0, int(meta.get("fenced_by", 0)))


class ChangeFeed:
    """The feed's half of :class:`~verifier.storage.database.Database` (which
    sets these attributes and gives the transactions)."""

    _pending: tuple[str, dict] | None
    _committing: int
    last_seq: int
    _transaction: Callable[..., AbstractContextManager[sqlite3.Connection]]
    _reading: Callable[[], AbstractContextManager[sqlite3.Connection]]
    record: Callable[[str, dict], None]

    def replayed_nothing(self, change: Change) -> Any:
        """What applying a change that alters no table (a new epoch) answers:
        the change itself here; a store of some kind says it in its own terms."""
        return change

    def _commit_change(self, conn: sqlite3.Connection) -> None:
        """Put the change the open transaction recorded on the feed, at the next
        sequence number and this store's epoch; refused on a fenced store."""
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

    def apply_change(self, change: Change) -> Any:
        """Apply a change from the primary's feed, durably, with the same
        sequence number, epoch and rows; what its kind's replay answers (a new
        epoch: :meth:`replayed_nothing`). A change already applied is skipped
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
            applied = replay(conn, change, self.replayed_nothing)
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
            self.record(NEW_EPOCH, {"epoch": epoch + 1})
        return epoch + 1

    def fence(self, newer_epoch: int) -> None:
        """Record that a newer epoch exists (a follower has shown it): this store
        takes no more writes as a primary."""
        with self._transaction(count=False) as conn:
            conn.execute("UPDATE meta SET value = MAX(value, ?) WHERE key = 'fenced_by'", (newer_epoch,))

    def position(self) -> FeedPosition:
        with self._reading() as conn:
            return position_in(conn)

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
