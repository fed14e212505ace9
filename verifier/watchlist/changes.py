"""The watch-lists' kinds of change on the feed, and their replay.

Each write of the watch-list store (:mod:`verifier.watchlist.store`) records
one change of a kind named here, with a payload holding all that a replica
needs to make it again (subjects with their templates and enrolment images,
lists replaced whole); each kind registers its replay with the feed
(:func:`verifier.storage.feed.register_change_kind`), which applies it on a
replica exactly as the primary made it (same rows) and says what it did, for
the index to follow (:class:`~verifier.watchlist.records.Applied`).
"""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import datetime

import numpy as np

from verifier.storage.feed import Change, register_change_kind
from verifier.templates import Template
from verifier.watchlist.records import Applied, StoredImage, SubjectEntry

CREATE_WATCHLIST = "create_watchlist"
DELETE_WATCHLIST = "delete_watchlist"
ADD_SUBJECT = "add_subject"
REMOVE_SUBJECT = "remove_subject"
REPLACE_PARTNER_LIST = "replace_partner_list"
REPLACE_TEMPLATES = "replace_templates"


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def template_record(template: Template) -> dict:
    return {"model_id": template.model_id, "version": template.version,
            "vector": base64.b64encode(template.to_bytes()).decode()}


def template_of_record(record: dict) -> Template:
    """A template from a feed or bundle record; malformed bytes fail the template checks."""
    data = base64.b64decode(record["vector"], validate=True)
    return Template.from_parts(str(record["model_id"]), int(record["version"]), len(data) // 4, data)


def subject_record(
    entry: SubjectEntry, created: float, templates: list[Template], images: list[StoredImage] | None = None
) -> dict:
    """A subject as a change on the feed: all a replica needs to store it alike,
    its enrolment images included (they travel base64-encoded)."""
    return {"watchlist": entry.watchlist, "subject_id": entry.subject_id, "external_ref": entry.external_ref,
            "reason": entry.reason, "source_agency": entry.source_agency, "created_at": created,
            "expires_at": _epoch(entry.expires_at), "templates": [template_record(t) for t in templates],
            "images": [{"position": i.position, "sha256": i.sha256, "size": i.size,
                        "data": base64.b64encode(i.data).decode("ascii")} for i in images or ()]}


def insert_subject(conn: sqlite3.Connection, record: dict, row: int | None = None) -> int:
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


def replace_partner_list(conn: sqlite3.Connection, payload: dict) -> tuple[list[tuple[int, int]], list[int]]:
    """Replace a partner's list wholly (created if absent): its subjects, its
    provenance and the issuer's last sequence. Returns the (row, template count)
    removed and the rows added, in order."""
    name, bundle = payload["watchlist"], payload["provenance"]
    removed = _rows_of(conn, name)
    conn.execute("DELETE FROM subjects WHERE watchlist = ?", (name,))
    conn.execute("INSERT OR IGNORE INTO watchlists (name, description, created_at) VALUES (?, ?, ?)",
                 (name, payload["description"], payload["imported_at"]))
    rows = [insert_subject(conn, {**subject, "watchlist": name}, payload["rows"][i] if "rows" in payload else None)
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


def replace_templates(conn: sqlite3.Connection, row: int, templates: list[tuple[int, dict]]) -> None:
    conn.execute("DELETE FROM templates WHERE subject = ?", (row,))
    conn.executemany(
        "INSERT INTO templates (subject, position, model_id, version, vector) VALUES (?, ?, ?, ?, ?)",
        [(row, position, t["model_id"], int(t["version"]), base64.b64decode(t["vector"])) for position, t in templates],
    )



def _create_watchlist(conn: sqlite3.Connection, change: Change) -> Applied:
    payload = json.loads(change.payload)
    conn.execute("INSERT INTO watchlists (name, description, created_at) VALUES (?, ?, ?)",
                 (payload["name"], payload["description"], payload["created_at"]))
    return Applied(change, created=(payload["name"],))


def _delete_watchlist(conn: sqlite3.Connection, change: Change) -> Applied:
    payload = json.loads(change.payload)
    conn.execute("DELETE FROM subjects WHERE watchlist = ?", (payload["name"],))
    conn.execute("DELETE FROM watchlists WHERE name = ?", (payload["name"],))
    return Applied(change, dropped=(payload["name"],))


def _add_subject(conn: sqlite3.Connection, change: Change) -> Applied:
    payload = json.loads(change.payload)
    row = insert_subject(conn, payload, int(payload["row"]))
    return Applied(change, added=((row, payload["watchlist"], _record_templates(payload), payload["expires_at"]),))


def _remove_subject(conn: sqlite3.Connection, change: Change) -> Applied:
    payload = json.loads(change.payload)
    count = conn.execute("SELECT COUNT(*) FROM templates WHERE subject = ?", (payload["row"],)).fetchone()[0]
    conn.execute("DELETE FROM subjects WHERE id = ?", (payload["row"],))
    return Applied(change, removed=((int(payload["row"]), payload["watchlist"], int(count)),))


def _replay_partner_list(conn: sqlite3.Connection, change: Change) -> Applied:
    payload = json.loads(change.payload)
    removed, rows = replace_partner_list(conn, payload)
    name = payload["watchlist"]
    return Applied(
        change, created=(name,), removed=tuple((row, name, count) for row, count in removed),
        added=tuple((row, name, _record_templates(subject), subject["expires_at"])
                    for row, subject in zip(rows, payload["subjects"])),
    )


def _replay_templates(conn: sqlite3.Connection, change: Change) -> Applied:
    payload = json.loads(change.payload)
    row = int(payload["row"])
    watchlist, expires, count = conn.execute(
        "SELECT s.watchlist, s.expires_at, (SELECT COUNT(*) FROM templates t WHERE t.subject = s.id)"
        " FROM subjects s WHERE s.id = ?", (row,)).fetchone()
    replace_templates(conn, row, [(int(t["position"]), t) for t in payload["templates"]])
    return Applied(change, removed=((row, watchlist, int(count)),),
                   added=((row, watchlist, _record_templates(payload), expires),))


register_change_kind(CREATE_WATCHLIST, _create_watchlist)
register_change_kind(DELETE_WATCHLIST, _delete_watchlist)
register_change_kind(ADD_SUBJECT, _add_subject)
register_change_kind(REMOVE_SUBJECT, _remove_subject)
register_change_kind(REPLACE_PARTNER_LIST, _replay_partner_list)
register_change_kind(REPLACE_TEMPLATES, _replay_templates)
