"""Open-set identification accuracy of the watch-list as it serves: the gallery
enrolled through the service into the store, every probe searched through the
FAISS index one at a time, candidates read back from the store.

Protocol (that of ``verifier eval`` on a folder set): each subject with two or
more images is enrolled from its first acquired image; the rest of their images
are mated searches; the images of subjects with a single image are never
enrolled and are non-mated searches. A mated probe that failed to acquire is a
miss; a non-mated one is left out of the FPIR.

- rank-1 hit rate: mated searches whose best candidate is the right subject.
- FPIR at threshold t: non-mated searches returning any candidate scoring >= t.
- FNIR at t: mated searches whose right subject is not the best candidate at >= t.

The 1:N calibration (:func:`calibrate`) repeats this on galleries of several
sizes: a seeded random subset of the people who could be enrolled is enrolled,
their other images are mated searches, and the images of everyone else (people
with a single image, and the people left out of the subset) are non-mated
searches. Each size gives, for each target FPIR, the threshold the server
decides at for galleries up to that size.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verifier.calibration import IdentificationRow, IdentificationThreshold, IdentificationThresholds
from verifier.config import Settings
from verifier.evaluation.cache import SetTemplates, embed_set
from verifier.evaluation.datasets import LabeledSet, Layout, load_set
from verifier.evaluation.metrics import (
    Identification,
    IdentificationPoint,
    Interval,
    count_at_or_above,
    identification,
    threshold_at,
    wilson,
)
from verifier.pipeline import FaceEngine, Selection
from verifier.templates import Template
from verifier.watchlist.service import WatchlistService, initialise_store
from verifier.watchlist.store import SubjectEntry


@dataclass(frozen=True)
class WatchlistAccuracy:
    """The top candidate of every search, and the figures that follow from them."""

    gallery: int
    mated_fta: int
    non_mated_fta: int
    # Per mated search: the top score (-inf where the probe failed to acquire),
    # and whether the top candidate was the right subject.
    mated_scores: np.ndarray
    mated_hit: np.ndarray
    # Top score of every acquired non-mated search, ascending.
    non_mated_top: np.ndarray
    confidence: float

    @property
    def rank1(self) -> float:
        return float(self.mated_hit.mean())

    @property
    def rank1_wilson(self) -> Interval:
        return wilson(int(self.mated_hit.sum()), len(self.mated_hit), self.confidence)

    def at(self, threshold: float, target_fpir: float = math.nan) -> IdentificationPoint:
        false_positives = count_at_or_above(self.non_mated_top, threshold)
        misses = int(len(self.mated_hit) - np.sum(self.mated_hit & (self.mated_scores >= threshold)))
        return IdentificationPoint(
            target_fpir, threshold, false_positives, false_positives / len(self.non_mated_top), misses,
            misses / len(self.mated_hit), wilson(misses, len(self.mated_hit), self.confidence),
        )

    def at_fpir(self, target: float) -> IdentificationPoint:
        """The operating point at the lowest threshold whose FPIR is at most ``target``."""
        return self.at(threshold_at(self.non_mated_top, target), target)


# Sees every top score: the service returns candidates whatever they score.
EVERY_SCORE = IdentificationThreshold(-1.0, 1.0, "no threshold: measuring")


def enrollable(labeled: LabeledSet, templates: SetTemplates) -> dict[int, int]:
    """Subject to its enrolment image: the first acquired image of every subject with two or more."""
    subjects = labeled.subjects
    images_of = np.bincount(subjects, minlength=len(labeled.subject_names))
    gallery: dict[int, int] = {}
    for i in np.flatnonzero(templates.acquired):
        if images_of[subjects[i]] > 1:
            gallery.setdefault(int(subjects[i]), int(i))
    return gallery


def measure(
    service: WatchlistService, labeled: LabeledSet, templates: SetTemplates, watchlist: str, confidence: float,
    members: Collection[int] | None = None,
) -> WatchlistAccuracy:
    """Enrol the gallery (or only the ``members`` of it) into a new ``watchlist``
    of ``service`` and search every probe.

    The service must return every candidate whatever its score (a threshold of
    -1), so that the top score of each search is seen and operating points can
    be chosen afterwards.
    """
    if service.thresholds.for_gallery(0).value > -1.0:
        raise ValueError("measure needs a service whose threshold is -1, to see every top score")
    subjects, acquired = labeled.subjects, templates.acquired
    images_of = np.bincount(subjects, minlength=len(labeled.subject_names))
    pool = enrollable(labeled, templates)
    gallery = pool if members is None else {subject: pool[subject] for subject in members}
    left_out = set(pool) - set(gallery)
    service.create_watchlist(watchlist, f"identification accuracy on {labeled.name}")
    for subject, image in gallery.items():
        entry = SubjectEntry(watchlist, labeled.subject_names[subject], "evaluation", labeled.name)
        service.enrol(entry, [Template(templates.model_id, templates.vectors[image])])
    enrolled = set(gallery.values())
    mated = [i for i in range(len(labeled)) if int(subjects[i]) in gallery and i not in enrolled]
    non_mated = [i for i in range(len(labeled)) if images_of[subjects[i]] == 1 or int(subjects[i]) in left_out]

    def best(image: int) -> tuple[str, float]:
        found = service.identify(Template(templates.model_id, templates.vectors[image]), [watchlist], top_k=1)
        top = found.candidates[0]
        return top.subject.entry.subject_id, top.score

    mated_scores = np.full(len(mated), -np.inf, dtype=np.float32)
    mated_hit = np.zeros(len(mated), dtype=bool)
    for k, image in enumerate(mated):
        if acquired[image]:
            name, mated_scores[k] = best(image)
            mated_hit[k] = name == labeled.subject_names[subjects[image]]
    non_mated_top = np.sort(np.array([best(i)[1] for i in non_mated if acquired[i]], dtype=np.float32))
    return WatchlistAccuracy(
        gallery=len(gallery),
        mated_fta=int(np.sum(~acquired[mated])),
        non_mated_fta=int(np.sum(~acquired[non_mated])),
        mated_scores=mated_scores,
        mated_hit=mated_hit,
        non_mated_top=non_mated_top,
        confidence=confidence,
    )


@contextmanager
def measuring_service(settings: Settings, engine: FaceEngine) -> Iterator[WatchlistService]:
    """A watch-list service over a fresh store in a temporary data directory,
    returning every candidate whatever its score."""
    local = settings.model_copy(deep=True)
    local.watchlist.snapshot_path = None
    with tempfile.TemporaryDirectory() as data_dir:
        local.data_dir = Path(data_dir)
        initialise_store(local)
        service = WatchlistService.open(local, engine, IdentificationThresholds.fixed(EVERY_SCORE))
        try:
            service.load()
            yield service
        finally:
            service.close()


def calibrate(
    settings: Settings, engine: FaceEngine, labeled: LabeledSet, templates: SetTemplates
) -> list[IdentificationRow]:
    """1:N calibration rows: for each gallery size of ``evaluation.identification_gallery_sizes``
    that the set allows, and the whole gallery, and each target of
    ``evaluation.fpir_targets``, the threshold at that FPIR measured with real
    searches of a real watch-list of that size."""
    config = settings.evaluation
    pool = sorted(enrollable(labeled, templates))
    sizes = sorted({size for size in config.identification_gallery_sizes if size < len(pool)} | {len(pool)})
    rng = np.random.default_rng(config.bootstrap_seed)
    with measuring_service(settings, engine) as service:
        measured = [
            (size, measure(service, labeled, templates, f"gallery-{size}", config.confidence,
                           rng.choice(pool, size, replace=False).tolist() if size < len(pool) else pool))
            for size in sizes
        ]
    rows = []
    for target in config.fpir_targets:
        # A larger gallery never gets a lower threshold than a smaller one
        # (sampling noise could give one): the running maximum, re-measured.
        floor = -math.inf
        for size, accuracy in measured:
            floor = max(floor, accuracy.at_fpir(target).threshold)
            if not math.isfinite(floor):
                continue  # too few non-mated searches for this target: no row rather than a guess
            point = accuracy.at(floor, target)
            rows.append(IdentificationRow(
                target_fpir=target, gallery_size=size, threshold=point.threshold, measured_fpir=point.fpir,
                false_positives=point.false_positives, non_mated_searches=len(accuracy.non_mated_top),
                fnir=point.fnir, mated_searches=len(accuracy.mated_hit),
            ))
    return sorted(rows, key=lambda row: (-row.target_fpir, row.gallery_size))


def evaluate(settings: Settings, engine: FaceEngine, root: Path) -> tuple[WatchlistAccuracy, Identification]:
    """A folder set (``<person>/<image>``) searched through a fresh watch-list in a
    temporary data directory, and by brute force for comparison. Templates come
    through the real pipeline (the labelled face is the central one) and are cached."""
    labeled = load_set(root, Layout.FOLDERS)
    templates = embed_set(engine, labeled, settings.evaluation.cache_dir, Selection.CENTRE)
    with measuring_service(settings, engine) as service:
        accuracy = measure(service, labeled, templates, labeled.name, settings.evaluation.confidence)
    brute = identification(
        templates.vectors, labeled.subjects, templates.acquired, settings.evaluation.fpir_targets,
        settings.evaluation.confidence, settings.evaluation.chunk_rows,
    )
    return accuracy, brute
