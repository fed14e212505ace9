"""Reading a model's templates out of the watch-list store for the index, and
finding those that fail the template checks (quarantine)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from itertools import compress

import numpy as np

from verifier.errors import Reason
from verifier.templates import NORM_TOLERANCE, TEMPLATE_VERSION, TemplateSpec, problem_with
from verifier.watchlist.records import QuarantinedTemplate

# Rows read from the store per step of a scan: bounds the memory of a load to
# a few tens of MB beyond the vectors kept, whatever the gallery's size.
_SCAN_ROWS = 65536


@dataclass
class Scan:
    """The result of one pass over the templates of a model (see :func:`scan`)."""

    # Per group: (rows, positions, vectors) of the templates that passed, a part per step.
    kept: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]
    # (row, position) of each template that failed.
    suspect: list[tuple[int, int]]


def scan(conn: sqlite3.Connection, spec: TemplateSpec, owners: list[np.ndarray], keep: bool) -> Scan:
    """One pass over the stored templates of ``spec``'s model, in row order,
    keeping those of the subjects in ``owners`` (one sorted array of subject
    rows per group) that pass the template checks, and noting those that fail.

    Why it is shaped so: at a million templates the per-row Python work of a
    load was most of a start. So the cheap checks (version, stored as bytes,
    the right length) run in SQL, which hands over the vector only when they
    pass; the rows are read in steps of :data:`_SCAN_ROWS` and handled as
    columns (one ``zip``, one ``bytes.join``, one norm per step in numpy).
    A template that fails is looked at alone afterwards (:func:`quarantine`).
    """
    ids = np.concatenate(owners) if owners else np.empty(0, dtype=np.int64)
    group = np.repeat(np.arange(len(owners), dtype=np.int64), [len(o) for o in owners])
    order = np.argsort(ids, kind="stable")
    ids, group = ids[order], group[order]
    found = Scan({}, [])
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


def quarantine(conn: sqlite3.Connection, spec: TemplateSpec, found: list[tuple[int, int]]) -> list[QuarantinedTemplate]:
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

