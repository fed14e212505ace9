"""The watch-list store: the watch-lists' tables in a SQLite database, the source of truth.

The database itself (file lifecycle, lock, transactions, backups and pinned
snapshots, schema upgrades) is the storage engine's
(:mod:`verifier.storage.database`), and every write goes on its change feed
(:mod:`verifier.storage.feed`) as one of the watch-lists' kinds of change
(:mod:`verifier.watchlist.changes`). This module holds the watch-lists, their
subjects, templates and enrolment images, and the partner lists imported from
signed bundles: what the tables are, and how they are read and written. A
subject is stored with all its templates or not at all.

Since schema 2 the store keeps each subject's enrolment images, as sent (with
their sha256 and size): they are the agency's record, and when the model
changes, templates are made again from them (``verifier watchlist migrate``).
A store of schema 1 is upgraded when first opened for writing (one
transaction: the images table is added; subjects enrolled before have none).
The partner tables were added without a new schema version: a store lacking
them gets them when opened for writing.

The registry keeps its tables in the same file (:mod:`verifier.registry.store`),
so that its changes go on the same feed, in order with the watch-lists'.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

from verifier.errors import Reason, VerifierError
from verifier.storage.database import Database, Tables
from verifier.storage.database import private_directory, private_file  # noqa: F401 - verifier.registry.service's
from verifier.storage.feed import Change
from verifier.templates import Template, TemplateSpec
from verifier.validation import moment
from verifier.watchlist.changes import (
    ADD_SUBJECT,
    CREATE_WATCHLIST,
    DELETE_WATCHLIST,
    REMOVE_SUBJECT,
    REPLACE_PARTNER_LIST,
    REPLACE_TEMPLATES,
    insert_subject,
    replace_partner_list,
    replace_templates,
    subject_record,
    template_record,
)
from verifier.watchlist.records import (
    Applied,
    Provenance,
    QuarantinedTemplate,
    SearchableTemplates,
    StoredImage,
    Subject,
    SubjectEntry,
    Unmigrated,
    Watchlist,
)
from verifier.watchlist.scan import quarantine, scan

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


# The partner lists imported from signed bundles: where each came from, and
# the last bundle sequence accepted from each issuer (a replayed bundle is refused).
_PARTNER_SCHEMA = """
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

TABLES = Tables(
    "watchlist", _SCHEMA + _IMAGES_SCHEMA + _PARTNER_SCHEMA, version_key="schema_version", version=SCHEMA_VERSION,
    upgrades={1: _IMAGES_SCHEMA},
    upgrade_hint="open it for writing once, e.g. `verifier watchlist migrate`, to upgrade it",
)

_SUBJECT_COLUMNS = (
    "s.id, s.watchlist, s.subject_id, s.external_ref, s.reason, s.source_agency, s.created_at, s.expires_at, "
    "(SELECT COUNT(*) FROM templates t WHERE t.subject = s.id), "
    "(SELECT GROUP_CONCAT(DISTINCT t.model_id) FROM templates t WHERE t.subject = s.id), "
    "(SELECT COUNT(*) FROM images i WHERE i.subject = s.id)"
)


def _moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else moment(epoch)


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


def _no_watchlist(name: str) -> VerifierError:
    return VerifierError(Reason.WATCHLIST_NOT_FOUND, f"no watch-list named {name!r}", watchlist=name)


class WatchlistStore(Database):
    """Watch-lists, subjects and their templates in one SQLite file (see
    :class:`~verifier.storage.database.Database` for how it is opened, written and read)."""

    TABLES = (TABLES,)
    NAME = "watch-list store"
    MISSING_HINT = "create one with `verifier watchlist init`, or restore the file from its backup"

    def replayed_nothing(self, change: Change) -> Applied:
        """A new epoch, applied, changes no list: nothing for the index to follow."""
        return Applied(change)

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
            removed, rows = replace_partner_list(conn, payload)
            self.record(REPLACE_PARTNER_LIST, {**payload, "rows": rows})
        return removed, rows

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
            self.record(CREATE_WATCHLIST, {"name": name, "description": description, "created_at": created})
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
            self.record(DELETE_WATCHLIST, {"name": name})
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
                row = insert_subject(conn, record)
            except sqlite3.IntegrityError as exc:
                raise VerifierError(
                    Reason.SUBJECT_EXISTS, f"subject {entry.subject_id!r} is already in watch-list {entry.watchlist!r}",
                    watchlist=entry.watchlist, subject_id=entry.subject_id,
                ) from exc
            self.record(ADD_SUBJECT, {**record, "row": row})
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
            replace_templates(conn, row, [(position, template_record(t)) for position, t in sorted(templates.items())])
            self.record(REPLACE_TEMPLATES, {"row": row, "templates": [
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
            self.record(REMOVE_SUBJECT, {"watchlist": watchlist, "subject_id": subject_id, "row": found.row})
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
            found = scan(conn, spec, owners, keep=True)
            quarantined = quarantine(conn, spec, found.suspect)
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
            return quarantine(conn, spec, scan(conn, spec, owners, keep=False).suspect)

    def still_quarantined(self, spec: TemplateSpec, found: list[tuple[int, int]]) -> list[QuarantinedTemplate]:
        """Of the templates at ``found`` (row, position) that failed the checks
        when an index was built, those still stored and still failing: what a
        start from that index's snapshot reports, without a scan of the store."""
        with self._reading() as conn:
            return quarantine(conn, spec, found)

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
