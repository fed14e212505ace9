"""Templates made again from the stored enrolment images when the model changes.

A template is only comparable with templates of the same model, so after a
change of model pack the subjects enrolled under the old one cannot be found,
and the server refuses their lists (WATCHLIST_NEEDS_MIGRATION). Migration runs
the served pipeline over each such subject's stored images and puts the new
templates in place of the old, one transaction per subject.

The old templates are dropped, not kept beside the new: a subject is then of
exactly one model, which is what the service checks; template keys stay within
the per-subject limit however often the model changes; and nothing is lost,
since the images they came from are kept (migrating back re-extracts them).
Subjects enrolled from templates alone have no images and cannot be migrated:
they are reported, and an operator re-enrols or removes them.

Each subject commits on its own, and a subject that already has a template of
the served model is not looked at again, so an interrupted run is resumed by
running it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine, FaceResult
from verifier.templates import Template
from verifier.watchlist.store import Subject, WatchlistStore


@dataclass(frozen=True)
class Plan:
    """What a migration to ``model_id`` has to do: the subjects it can migrate
    (they have images), those it cannot, and how many are already done."""

    model_id: str
    migratable: list[Subject]
    without_images: list[Subject]
    current: int


@dataclass(frozen=True)
class Migrated:
    """One subject migrated: templates made, from how many stored images."""

    subject: Subject
    templates: int
    images: int


def plan(store: WatchlistStore, model_id: str, watchlist: str | None = None) -> Plan:
    """The subjects (of one watch-list, or all) without a template of ``model_id``."""
    unmigrated = store.unmigrated(model_id, watchlist)
    rows = {row for need in unmigrated.values() for row in need.rows}
    bare = {row for need in unmigrated.values() for row in need.without_images}
    subjects = list(store.subjects(watchlist))
    return Plan(
        model_id,
        [s for s in subjects if s.row in rows and s.row not in bare],
        [s for s in subjects if s.row in bare],
        sum(1 for s in subjects if s.row not in rows),
    )


def migrate_subject(store: WatchlistStore, engine: FaceEngine, subject: Subject) -> Migrated:
    """Re-extract one subject's templates from its stored images with ``engine``
    and store them in place of the old ones. Images whose bytes no longer match
    their stored sha256 are not used; if no image gives a face, the subject is
    left as it was and the first image's error is raised."""
    stored = store.images_of(subject.row)
    if not stored:
        raise VerifierError(
            Reason.REQUEST_INCOMPLETE, "enrolled without images: re-enrol or remove this subject",
            watchlist=subject.entry.watchlist, subject_id=subject.entry.subject_id,
        )
    intact = [image for image in stored if image.intact]
    results = engine.analyse_batch([image.data for image in intact]) if intact else []
    templates = {
        image.position: Template(engine.model_id, result.template.vector)
        for image, result in zip(intact, results)
        if isinstance(result, FaceResult)
    }
    if not templates:
        errors = [result for result in results if isinstance(result, VerifierError)]
        if errors:
            raise errors[0].with_detail(images=len(stored))
        raise VerifierError(
            Reason.IMAGE_UNDECODABLE, f"none of the {len(stored)} stored images matches its sha256",
            images=len(stored),
        )
    store.replace_templates(subject.row, templates)
    return Migrated(subject, len(templates), len(stored))
