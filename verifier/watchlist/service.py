"""Watch-list use cases, free of any transport: lists, enrolment, removal, 1:N identification.

A write commits to the store first (the commit is the acknowledgement) and then
updates the index, both under one lock, so the index applies changes in the
store's order and a snapshot taken under that lock matches the store's change
sequence exactly. Searches take no part in that lock: they share the index's
read lock (see :mod:`verifier.watchlist.index`) and read subject details from
the store through their own connections. A search running while a subject is
removed may see the hit in the index and then find the row gone; that
candidate is dropped, as if the search had started after the removal.

Until :meth:`WatchlistService.load` has loaded or rebuilt the index, anything
that needs it is refused with INDEX_NOT_READY; reading a subject or listing
watch-lists only needs the store and works at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verifier.config import Settings, WatchlistSettings
from verifier.errors import Reason, VerifierError
from verifier.imaging import ImageUse
from verifier.pipeline import FaceEngine, FaceResult, Selection
from verifier.templates import Template
from verifier.watchlist.index import SnapshotTag, WatchlistIndex, template_ids
from verifier.watchlist.store import Subject, SubjectEntry, Watchlist, WatchlistStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdentificationThreshold:
    """The score a candidate must reach, and the false-positive identification
    rate (share of searches for someone not enrolled that return a candidate)
    it was measured to give."""

    value: float
    fpir: float
    source: str


@dataclass(frozen=True)
class Candidate:
    rank: int
    subject: Subject
    score: float


@dataclass(frozen=True)
class Identification:
    candidates: list[Candidate]
    threshold: IdentificationThreshold
    probe: FaceResult | None
    searched: int
    timings_ms: dict[str, float]
    model_id: str


@dataclass(frozen=True)
class SampleOutcome:
    """One enrolment sample: the face found in it, or why it was not used."""

    index: int
    face: FaceResult | None = None
    error: VerifierError | None = None


@dataclass(frozen=True)
class Enrolment:
    subject: Subject
    samples: list[SampleOutcome]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadReport:
    source: str
    templates: int
    seconds: float


@dataclass(frozen=True)
class Consistency:
    """The index checked against the store: template ids the store says should
    be searchable but the index lacks, and ids the index holds but should not."""

    store_templates: int
    index_templates: int
    missing: frozenset[int]
    extra: frozenset[int]

    @property
    def agrees(self) -> bool:
        return not self.missing and not self.extra


def identification_threshold(settings: WatchlistSettings) -> IdentificationThreshold:
    return IdentificationThreshold(
        value=settings.threshold,
        fpir=settings.threshold_fpir,
        source="configured default (measured 1:N on the LFW dev half; see benchmarks/identification.py)",
    )


def _require(value: str, name: str) -> None:
    if not value:
        raise VerifierError(Reason.REQUEST_INCOMPLETE, f"{name} is required", field=name)


class WatchlistService:
    def __init__(
        self, settings: WatchlistSettings, store: WatchlistStore, engine: FaceEngine, snapshot: Path | None
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.snapshot = snapshot
        self.threshold = identification_threshold(settings)
        self._index: WatchlistIndex | None = None
        self._writes = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, settings: Settings, engine: FaceEngine) -> "WatchlistService":
        """Open the configured store for writing; call :meth:`load` before searching."""
        config = settings.watchlist
        store = WatchlistStore.open(config.store_file(settings.data_dir), config.busy_timeout_seconds)
        return cls(config, store, engine, config.snapshot_file(settings.data_dir))

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def ready(self) -> bool:
        return self._index is not None and not self._closed

    def _tag(self) -> SnapshotTag:
        return SnapshotTag(self.store.store_id, self.store.change_seq(), self.model_id, self.engine.embedder.dimension)

    def load(self) -> LoadReport:
        """Load the saved index if it matches the store's change sequence, else rebuild it from the store."""
        start = time.perf_counter()
        with self._writes:
            tag = self._tag()
            index = WatchlistIndex.load(self.snapshot, tag) if self.snapshot is not None else None
            source = "snapshot"
            if index is None:
                source = "store"
                lists = {
                    name: (template_ids(found.rows, found.positions), found.vectors)
                    for name, found in self.store.searchable(self.model_id, time.time()).items()
                }
                index = WatchlistIndex.build(tag.dimension, lists)
            index.set_expiries(self.store.expiries())
            index.sweep(time.time())
            foreign = {model: n for model, n in self.store.template_models().items() if model != self.model_id}
            if foreign:
                log.warning("templates of other models are stored but not searchable: %s", foreign)
            self._index = index
        report = LoadReport(source, index.size(), time.perf_counter() - start)
        log.info("watch-list index from %s: %d templates in %.2f s", report.source, report.templates, report.seconds)
        return report

    def close(self) -> None:
        """Save the index (tagged with the store's change sequence) and close the store."""
        with self._writes:
            if self._closed:
                return
            self._closed = True
            if self._index is not None and self.snapshot is not None:
                self._index.save(self.snapshot, self._tag())
            self.store.close()

    def _ready_index(self) -> WatchlistIndex:
        if self._index is None or self._closed:
            raise VerifierError(Reason.INDEX_NOT_READY, "the watch-list index is loading; try again shortly")
        return self._index

    def create_watchlist(self, name: str, description: str) -> Watchlist:
        _require(name, "name")
        with self._writes:
            index = self._ready_index()
            created = self.store.create_watchlist(name, description)
            index.add_watchlist(name)
        return created

    def watchlists(self) -> list[Watchlist]:
        return self.store.watchlists()

    def subject(self, watchlist: str, subject_id: str) -> Subject:
        return self.store.subject(watchlist, subject_id)

    def enrol(self, entry: SubjectEntry, samples: list[bytes | Template], allow_partial: bool = False) -> Enrolment:
        """Store a subject with a template from each sample (image or template).

        An image without a usable face fails the whole enrolment, unless
        ``allow_partial``, when it is reported and left out; a template of
        another model always fails it. The subject is stored with all its
        templates or not at all.
        """
        _require(entry.watchlist, "watchlist")
        _require(entry.subject_id, "subject_id")
        if not samples:
            raise VerifierError(Reason.REQUEST_INCOMPLETE, "an enrolment needs at least one image or template")
        limit = self.settings.max_templates_per_subject
        if len(samples) > limit:
            raise VerifierError(
                Reason.TOO_MANY_TEMPLATES, f"{len(samples)} samples, at most {limit} per subject",
                samples=len(samples), limit=limit,
            )
        self._ready_index()
        outcomes, timings = self._analyse(samples)
        failed = [(o.index, o.error) for o in outcomes if o.error is not None]
        if failed and (not allow_partial or len(failed) == len(outcomes)):
            first, error = failed[0]
            raise error.with_detail(sample=first, failed_samples=",".join(str(i) for i, _ in failed))
        vectors = [self._template_of(samples[o.index], o).vector for o in outcomes if o.error is None]
        templates = [Template(self.model_id, vector) for vector in vectors]
        start = time.perf_counter()
        with self._writes:
            index = self._ready_index()
            subject = self.store.add_subject(entry, templates)
            index.add_subject(entry.watchlist, subject.row, np.stack(vectors), _epoch(entry))
        timings["store"] = (time.perf_counter() - start) * 1000.0
        return Enrolment(subject, outcomes, timings)

    def _analyse(self, samples: list[bytes | Template]) -> tuple[list[SampleOutcome], dict[str, float]]:
        images = [i for i, sample in enumerate(samples) if isinstance(sample, bytes)]
        batch = [samples[i] for i in images]
        results = self.engine.analyse_batch(batch, Selection.LARGEST, ImageUse.ENROLMENT) if images else []  # type: ignore[arg-type]
        faces = dict(zip(images, results))
        outcomes = []
        for i, sample in enumerate(samples):
            if isinstance(sample, Template):
                try:
                    sample.require_model(self.model_id)
                except VerifierError as error:
                    raise error.with_detail(sample=i)
                outcomes.append(SampleOutcome(i))
            elif isinstance(faces[i], VerifierError):
                outcomes.append(SampleOutcome(i, error=faces[i]))  # type: ignore[arg-type]
            else:
                outcomes.append(SampleOutcome(i, face=faces[i]))  # type: ignore[arg-type]
        timings = next((r.timings_ms for r in results if isinstance(r, FaceResult)), {})
        return outcomes, dict(timings)

    @staticmethod
    def _template_of(sample: bytes | Template, outcome: SampleOutcome) -> Template:
        return sample if isinstance(sample, Template) else outcome.face.template  # type: ignore[union-attr]

    def remove(self, watchlist: str, subject_id: str) -> Subject:
        """Delete a subject; once this returns no search can return it."""
        with self._writes:
            index = self._ready_index()
            subject = self.store.remove_subject(watchlist, subject_id)
            index.remove_subject(watchlist, subject.row, subject.template_count)
        return subject

    def identify(
        self, probe: bytes | Template, watchlists: list[str] | None = None, top_k: int | None = None
    ) -> Identification:
        """The best-scoring live subjects at or above the threshold, best first,
        in the named watch-lists (all of them when none are named)."""
        index = self._ready_index()
        names = list(dict.fromkeys(watchlists)) if watchlists else index.watchlists()
        for name in names:
            if not index.has_watchlist(name):
                raise VerifierError(Reason.WATCHLIST_NOT_FOUND, f"no watch-list named {name!r}", watchlist=name)
        wanted = min(top_k or self.settings.default_top_k, self.settings.max_top_k)
        face: FaceResult | None = None
        if isinstance(probe, Template):
            probe.require_model(self.model_id)
            template, timings = probe, {}
        else:
            face = self.engine.analyse(probe, Selection.LARGEST, ImageUse.LIVE)
            template, timings = face.template, dict(face.timings_ms)
        start = time.perf_counter()
        now = time.time()
        outcome = index.search(template.vector, names, wanted, self.threshold.value, now)
        subjects = self.store.subjects_by_row([hit.row for hit in outcome.hits])
        live = [hit for hit in outcome.hits if hit.row in subjects]
        candidates = [Candidate(rank, subjects[hit.row], hit.score) for rank, hit in enumerate(live, start=1)]
        timings["search"] = (time.perf_counter() - start) * 1000.0
        if outcome.expired_skipped:
            index.sweep(now)
        return Identification(candidates, self.threshold, face, outcome.searched, timings, self.model_id)

    def consistency(self) -> Consistency:
        """Check the index against the store, after sweeping out expired subjects."""
        with self._writes:
            index = self._ready_index()
            now = time.time()
            index.sweep(now)
            expected = {
                (name, int(key))
                for name, found in self.store.searchable(self.model_id, now).items()
                for key in template_ids(found.rows, found.positions)
            }
            actual = {(name, int(key)) for name, keys in index.keys().items() for key in keys}
        return Consistency(
            len(expected), len(actual),
            frozenset(key for _, key in expected - actual), frozenset(key for _, key in actual - expected),
        )


def _epoch(entry: SubjectEntry) -> float | None:
    return None if entry.expires_at is None else entry.expires_at.timestamp()
