"""The registry's tables and its kinds of change, in the watch-lists' database file.

The registry is a store of its own (its tables, its queries, its kinds of
change and their replay, this module) but lives in the same database file as
the watch-lists, so that every registry change is one transaction that also
writes its row of the change feed: a replica receives registrations, updates,
erasures and uses in order, with the watch-list changes, over the same feed
(see :mod:`verifier.storage.feed`).

Personal data kept: the traveller id the caller chose, a keyed hash of the
document number (never the number), the consent record and the templates
(chip, live). Erasure deletes the rows with SQLite's ``secure_delete`` on (the
freed bytes are overwritten with zeros), scrubs the biometric payload of the
traveller's earlier changes on the feed (a follower that has not received them
yet gets a redacted change that adds nothing), and truncates the write-ahead
log, so the template is gone from every file of the store.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from verifier.errors import Reason, VerifierError
from verifier.storage.database import Database, Tables
from verifier.storage.feed import Change, next_seq, redact, register_change_kind
from verifier.templates import Template
from verifier.watchlist.changes import template_record
from verifier.watchlist.records import Applied

REGISTER_TRAVELLER = "register_traveller"
UPDATE_TRAVELLER = "update_traveller"
ERASE_TRAVELLER = "erase_traveller"
TOUCH_TRAVELLER = "touch_traveller"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS travellers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    traveller_id TEXT NOT NULL UNIQUE,
    document_hash TEXT NOT NULL,
    consent_at REAL NOT NULL,
    consent_gate TEXT NOT NULL,
    consent_text_version TEXT NOT NULL,
    registered_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_used_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS travellers_document ON travellers (document_hash);
CREATE INDEX IF NOT EXISTS travellers_last_used ON travellers (last_used_at);
CREATE TABLE IF NOT EXISTS traveller_templates (
    traveller INTEGER NOT NULL REFERENCES travellers(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (traveller, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traveller_feed (
    traveller INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (traveller, seq)
) WITHOUT ROWID;
"""
# Unversioned: added where absent whenever a server opens the file for writing.
TABLES = Tables("registry", _SCHEMA)

# Template positions: the chip photo's and the live capture's.
CHIP, LIVE = 0, 1


@dataclass(frozen=True)
class Traveller:
    row: int
    traveller_id: str
    document_hash: str
    consent_at: float
    consent_gate: str
    consent_text_version: str
    registered_at: float
    updated_at: float
    last_used_at: float
    templates: tuple[Template, ...] = ()


_COLUMNS = ("id, traveller_id, document_hash, consent_at, consent_gate, consent_text_version, registered_at,"
            " updated_at, last_used_at")


def _templates(conn: sqlite3.Connection, row: int) -> tuple[Template, ...]:
    return tuple(
        Template.from_parts(model_id, int(version), len(vector) // 4, vector)
        for model_id, version, vector in conn.execute(
            "SELECT model_id, version, vector FROM traveller_templates WHERE traveller = ? ORDER BY position", (row,))
    )


def _traveller(conn: sqlite3.Connection, found: tuple) -> Traveller:
    return Traveller(int(found[0]), *found[1:], templates=_templates(conn, int(found[0])))


def _record_templates(record: dict) -> list[Template]:
    return [Template.from_parts(t["model_id"], int(t["version"]), len(base64.b64decode(t["vector"])) // 4,
                                base64.b64decode(t["vector"])) for t in record["templates"]]


def _put_templates(conn: sqlite3.Connection, row: int, templates: list[dict]) -> None:
    conn.execute("DELETE FROM traveller_templates WHERE traveller = ?", (row,))
    conn.executemany(
        "INSERT INTO traveller_templates (traveller, position, model_id, version, vector) VALUES (?, ?, ?, ?, ?)",
        [(row, i, t["model_id"], int(t["version"]), base64.b64decode(t["vector"])) for i, t in enumerate(templates)],
    )


def _carried(conn: sqlite3.Connection, row: int, seq: int) -> None:
    """Remember that feed change ``seq`` carries this traveller's templates (scrubbed at erasure)."""
    conn.execute("INSERT OR IGNORE INTO traveller_feed (traveller, seq) VALUES (?, ?)", (row, seq))


def _insert(conn: sqlite3.Connection, payload: dict, seq: int) -> int:
    row = payload.get("row")
    cursor = conn.execute(
        "INSERT INTO travellers (id, traveller_id, document_hash, consent_at, consent_gate, consent_text_version,"
        " registered_at, updated_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row, payload["traveller_id"], payload["document_hash"], payload["consent_at"], payload["consent_gate"],
         payload["consent_text_version"], payload["registered_at"], payload["registered_at"],
         payload["registered_at"]),
    )
    key = int(cursor.lastrowid or 0) if row is None else int(row)
    _put_templates(conn, key, payload["templates"])
    _carried(conn, key, seq)
    return key


def _update(conn: sqlite3.Connection, payload: dict, seq: int) -> None:
    row = int(payload["row"])
    _put_templates(conn, row, payload["templates"])
    conn.execute("UPDATE travellers SET updated_at = ?, last_used_at = ? WHERE id = ?",
                 (payload["updated_at"], payload["updated_at"], row))
    if payload.get("document_hash"):
        conn.execute("UPDATE travellers SET document_hash = ? WHERE id = ?", (payload["document_hash"], row))
    _carried(conn, row, seq)


def _erase(conn: sqlite3.Connection, row: int) -> None:
    """Delete the traveller and scrub its templates from the feed's earlier changes."""
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute("DELETE FROM travellers WHERE id = ?", (row,))
    for (seq,) in conn.execute("SELECT seq FROM traveller_feed WHERE traveller = ?", (row,)).fetchall():
        redact(conn, seq, {"row": row, "redacted": True})
    conn.execute("DELETE FROM traveller_feed WHERE traveller = ?", (row,))


def _touch(conn: sqlite3.Connection, uses: list[list]) -> None:
    """Move each traveller's last use to the given time, never back (a row erased since is skipped)."""
    conn.executemany("UPDATE travellers SET last_used_at = MAX(last_used_at, ?) WHERE id = ?",
                     [(float(at), int(row)) for row, at in uses])


def _replay(conn: sqlite3.Connection, change: Change) -> Applied:
    """Apply a registry change from the feed exactly as the primary did."""
    payload = json.loads(change.payload)
    if change.kind == TOUCH_TRAVELLER and "uses" in payload:
        _touch(conn, payload["uses"])
        return Applied(change)
    row = int(payload["row"])
    if payload.get("redacted"):
        return Applied(change)  # the traveller has been erased since: nothing of it travels
    if change.kind == REGISTER_TRAVELLER:
        _insert(conn, payload, change.seq)
        return Applied(change, travellers=((row, _record_templates(payload)),))
    if change.kind == UPDATE_TRAVELLER:
        if conn.execute("SELECT 1 FROM travellers WHERE id = ?", (row,)).fetchone() is None:
            return Applied(change)
        _update(conn, payload, change.seq)
        return Applied(change, travellers=((row, _record_templates(payload)),))
    if change.kind == ERASE_TRAVELLER:
        _erase(conn, row)
        return Applied(change, travellers=((row, None),))
    conn.execute("UPDATE travellers SET last_used_at = MAX(last_used_at, ?) WHERE id = ?", (payload["at"], row))
    return Applied(change)


for _kind in (REGISTER_TRAVELLER, UPDATE_TRAVELLER, ERASE_TRAVELLER, TOUCH_TRAVELLER):
    register_change_kind(_kind, _replay)


def not_found(traveller_id: str) -> VerifierError:
    return VerifierError(Reason.SUBJECT_NOT_FOUND, f"no registered traveller {traveller_id!r}",
                         traveller_id=traveller_id)


class RegistryStore:
    """Travellers and their templates, over an open database (the watch-list store's)."""

    def __init__(self, store: Database) -> None:
        self.store = store
        if not store.readonly:
            store.add_tables(TABLES)

    def register(self, traveller_id: str, document_hash: str, consent_at: float, consent_gate: str,
                 consent_text_version: str, templates: list[Template]) -> int:
        """Store a traveller with its templates; refuses an id or a document already registered."""
        now = time.time()
        with self.store.transaction() as conn:
            taken = conn.execute("SELECT traveller_id FROM travellers WHERE traveller_id = ? OR document_hash = ?",
                                 (traveller_id, document_hash)).fetchone()
            if taken is not None and taken[0] == traveller_id:
                raise VerifierError(Reason.SUBJECT_EXISTS, f"traveller {traveller_id!r} is registered",
                                    traveller_id=traveller_id)
            if taken is not None:
                raise VerifierError(Reason.DUPLICATE_IDENTITY,
                                    f"this document is registered under traveller {taken[0]!r}",
                                    other_traveller_id=taken[0], found_by="document")
            payload = {"traveller_id": traveller_id, "document_hash": document_hash, "consent_at": consent_at,
                       "consent_gate": consent_gate, "consent_text_version": consent_text_version,
                       "registered_at": now, "templates": [template_record(t) for t in templates]}
            row = _insert(conn, payload, next_seq(conn))
            self.store.record(REGISTER_TRAVELLER, {**payload, "row": row})
        return row

    def update(self, traveller_id: str, templates: list[Template], document_hash: str | None) -> Traveller:
        """Replace a traveller's templates (and document), in one transaction: the
        old ones are kept until then. Returns the traveller as it was before."""
        with self.store.transaction() as conn:
            before = self._find(conn, traveller_id)
            if document_hash:
                other = conn.execute("SELECT traveller_id FROM travellers WHERE document_hash = ? AND id != ?",
                                     (document_hash, before.row)).fetchone()
                if other is not None:
                    raise VerifierError(Reason.DUPLICATE_IDENTITY,
                                        f"this document is registered under traveller {other[0]!r}",
                                        other_traveller_id=other[0], found_by="document")
            payload = {"row": before.row, "updated_at": time.time(), "document_hash": document_hash or "",
                       "templates": [template_record(t) for t in templates]}
            _update(conn, payload, next_seq(conn))
            self.store.record(UPDATE_TRAVELLER, payload)
        return before

    def erase(self, traveller_id: str) -> Traveller:
        """Erase a traveller everywhere in the store's files; returns what was erased."""
        with self.store.transaction() as conn:
            found = self._find(conn, traveller_id)
            _erase(conn, found.row)
            self.store.record(ERASE_TRAVELLER, {"row": found.row})
        self.store.checkpoint()
        return found

    def touch(self, uses: dict[int, float]) -> None:
        """Record uses (verifications: row to time) in one change: retention
        counts from each traveller's last use."""
        listed = [[row, at] for row, at in uses.items()]
        with self.store.transaction() as conn:
            _touch(conn, listed)
            self.store.record(TOUCH_TRAVELLER, {"uses": listed})

    def _find(self, conn: sqlite3.Connection, traveller_id: str) -> Traveller:
        found = conn.execute(f"SELECT {_COLUMNS} FROM travellers WHERE traveller_id = ?", (traveller_id,)).fetchone()
        if found is None:
            raise not_found(traveller_id)
        return _traveller(conn, found)

    def traveller(self, traveller_id: str) -> Traveller:
        with self.store.reading() as conn:
            return self._find(conn, traveller_id)

    def by_rows(self, rows: list[int]) -> dict[int, Traveller]:
        with self.store.reading() as conn:
            found = conn.execute(f"SELECT {_COLUMNS} FROM travellers WHERE id IN ({','.join('?' * len(rows))})",
                                 rows).fetchall() if rows else []
            return {int(r[0]): Traveller(int(r[0]), *r[1:]) for r in found}

    def unused_since(self, cutoff: float, limit: int) -> list[str]:
        """Traveller ids not used (registered, updated, verified) since ``cutoff``."""
        with self.store.reading() as conn:
            return [r[0] for r in conn.execute(
                "SELECT traveller_id FROM travellers WHERE last_used_at < ? ORDER BY last_used_at LIMIT ?",
                (cutoff, limit))]

    def count(self) -> int:
        with self.store.reading() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM travellers").fetchone()[0])

    def vectors(self, model_id: str, dimension: int, chunk: int = 100_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored template of ``model_id`` as (index ids, vectors) chunks, for (re)building an index."""
        from verifier.watchlist.index import template_ids

        with self.store.reading() as conn:
            cursor = conn.execute(
                "SELECT traveller, position, vector FROM traveller_templates WHERE model_id = ? AND length(vector) = ?",
                (model_id, 4 * dimension))
            while True:
                rows = cursor.fetchmany(chunk)
                if not rows:
                    return
                keys = template_ids(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))
                yield keys, np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dimension)
