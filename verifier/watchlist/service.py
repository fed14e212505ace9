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

Failing closed (:mod:`verifier.watchlist.availability`): a store fault takes the
service out of service with its reason, and it comes back by itself.
Replication (:mod:`verifier.watchlist.replicated`): the service as either end
of the change feed.

One model per list, never a silent mix: a watch-list holding any subject
without a template of the served model (enrolled under another model pack) is
refused for identification with WATCHLIST_NEEDS_MIGRATION, naming the list and
how many subjects can be migrated from their stored images (`verifier
watchlist migrate`) and how many cannot (enrolled from templates alone), until
they are migrated or removed. Searching all lists is refused while any list is.
Other lists serve on; enrolment and removal in that list work (that is how an
operator fixes it).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from verifier import deadlines, drift
from verifier.calibration import IdentificationThresholds, identification_thresholds
from verifier.config import Settings, WatchlistSettings
from verifier.errors import Reason, VerifierError
from verifier.imaging import ImageUse
from verifier.pipeline import FaceEngine, FaceResult, Selection
from verifier.watchlist import metrics
from verifier.watchlist.availability import LOADING, Availability, FailClosed, State
from verifier.templates import Template
from verifier.validation import epoch_seconds, identifier, text
from verifier.watchlist.index import (
    FAISS_LISTS,
    ListBackend,
    LoadedIndex,
    SnapshotTag,
    WatchlistIndex,
    list_backend,
    template_ids,
    template_rows,
)
from verifier.watchlist.replicated import Replicated
from verifier.watchlist.results import (
    Candidate,
    Consistency,
    Enrolment,
    Identification,
    LoadReport,
    SampleOutcome,
)
from verifier.storage.database import private_directory
from verifier.storage.faults import StoreError
from verifier.watchlist.changes import template_of_record
from verifier.watchlist.store import (
    Applied,
    QuarantinedTemplate,
    Subject,
    SubjectEntry,
    Unmigrated,
    Watchlist,
    WatchlistStore,
)

log = logging.getLogger(__name__)


def check_entry(entry: SubjectEntry, prefix: str = "subject", external_ref: str = "external_reference") -> None:
    """Refuse a subject whose ids, text fields or expiry could not be stored and
    shown safely, naming the field as ``<prefix>.<field>`` (a partner bundle's
    subjects are checked here too, under their own names)."""
    identifier(entry.watchlist, f"{prefix}.watchlist")
    identifier(entry.subject_id, f"{prefix}.subject_id")
    text(entry.reason, f"{prefix}.reason")
    text(entry.source_agency, f"{prefix}.source_agency")
    text(entry.external_ref, f"{prefix}.{external_ref}")
    if entry.expires_at is not None:
        epoch_seconds(entry.expires_at.timestamp(), f"{prefix}.expires")


def require_room(store: WatchlistStore, name: str, limit: int) -> None:
    """Refuse a change that would add watch-list ``name`` to a store already
    holding ``limit`` lists (watchlist.max_watchlists); replacing one is no growth."""
    if store.watchlist_count() < limit:
        return
    try:
        store.watchlist(name)
        return
    except VerifierError as error:
        if error.reason is not Reason.WATCHLIST_NOT_FOUND:
            raise
    raise VerifierError(Reason.TOO_MANY_WATCHLISTS,
                        f"the store holds {limit} watch-lists, the most allowed (watchlist.max_watchlists)",
                        watchlist=name, limit=limit)


def initialise_store(settings: Settings) -> Path:
    """Create the configured watch-list store, empty: the explicit first step
    (``verifier watchlist init``); the server never creates one by itself."""
    config = settings.watchlist
    path = config.store_file(settings.data_dir)
    private_directory(settings.data_dir)
    WatchlistStore.create(path, config.busy_timeout_seconds).close()
    return path


class WatchlistService(FailClosed, Replicated):
    """The watch-lists' use cases over one store and its index (see the module
    docstring); failing closed and replication are its two mixed-in halves."""

    def __init__(
        self, settings: WatchlistSettings, store_path: Path, engine: FaceEngine, snapshot: Path | None,
        thresholds: IdentificationThresholds, backend: ListBackend = FAISS_LISTS,
    ) -> None:
        self.settings = settings
        # Where each list's vectors are searched: the snapshot is used only for FAISS lists.
        self.backend = backend
        self.store_path = store_path
        self.engine = engine
        self.snapshot = snapshot
        self.thresholds = thresholds
        self._store: WatchlistStore | None = None
        self._index: WatchlistIndex | None = None
        self._writes = threading.Lock()
        self._recovering = threading.Lock()
        self._closed = False
        self._availability = LOADING
        self._quarantined: tuple[QuarantinedTemplate, ...] = ()
        self._unmigrated: dict[str, Unmigrated] = {}
        # A replica's index, loaded from its snapshot while the store was still arriving.
        self._preloaded: Future[LoadedIndex | None] | None = None
        # The id of the store last served: after a fault, only that store (the
        # file put back, or a restore of its backup) is taken up again by itself.
        self._served_id: str | None = None
        self._listeners: list[Callable[[Availability], None]] = []
        self._commit_listeners: list[Callable[[int], None]] = []
        self._applied_listeners: list[Callable[[Applied], None]] = []
        # Synchronous mode: waits until a replica holds the change (or refuses).
        self.confirmation: Callable[[int], None] | None = None
        # The primary's address while this server is a read-only replica.
        self.read_only_for: str | None = None

    @classmethod
    def for_settings(
        cls, settings: Settings, engine: FaceEngine, thresholds: IdentificationThresholds | None = None
    ) -> "WatchlistService":
        """The service over the configured store, not yet opened (see :meth:`supervise`),
        deciding at the pack's 1:N calibration unless ``thresholds`` are given."""
        config = settings.watchlist
        return cls(
            config, config.store_file(settings.data_dir), engine, config.snapshot_file(settings.data_dir),
            thresholds or identification_thresholds(settings, engine.model_id, engine.operating_point),
            list_backend(config, settings.data_dir),
        )

    @classmethod
    def open(
        cls, settings: Settings, engine: FaceEngine, thresholds: IdentificationThresholds | None = None
    ) -> "WatchlistService":
        """Open the configured store for writing (it must exist); call :meth:`load` before searching."""
        service = cls.for_settings(settings, engine, thresholds)
        service._store = WatchlistStore.open(service.store_path, settings.watchlist.busy_timeout_seconds)
        return service

    @property
    def store(self) -> WatchlistStore:
        if self._store is None:
            raise self._refusal()
        return self._store

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def ready(self) -> bool:
        return self._index is not None and not self._closed and self._availability.serving

    @property
    def quarantined(self) -> tuple[QuarantinedTemplate, ...]:
        """Stored templates left out of the index at the last load because they fail the checks."""
        return self._quarantined

    @property
    def unmigrated(self) -> dict[str, Unmigrated]:
        """Watch-lists refused for identification: their subjects without a template of the served model."""
        return dict(self._unmigrated)

    def _tag(self) -> SnapshotTag:
        return SnapshotTag(self.store.store_id, self.store.change_seq(), self.model_id, self.engine.embedder.dimension)

    def load(self) -> LoadReport:
        """Load the saved index if it matches the store's change sequence, else rebuild
        it from the store, leaving out (quarantining) stored templates that fail the checks.

        The saved index names the templates it was built without; a start from it
        re-checks only those rows, not the whole store (at a million templates a
        scan costs seconds of a replica's cold start)."""
        start = time.perf_counter()
        quarantined: list[QuarantinedTemplate] = []
        with self._writes, self._store_faults():
            tag = self._tag()
            # A snapshot holds FAISS lists: another backend is refilled from the store.
            preloaded = self._take_preloaded(tag)
            index = preloaded if self.backend.snapshots else None
            if index is None and self.snapshot is not None and self.backend.snapshots:
                index = WatchlistIndex.load(self.snapshot, tag)
            source = "snapshot"
            if index is None:
                source = "store"
                lists, quarantined = self.store.searchable(self.engine.template_spec, time.time())
                index = WatchlistIndex.build(
                    tag.dimension,
                    {name: (template_ids(found.rows, found.positions), found.vectors) for name, found in lists.items()},
                    template_ids(np.array([q.row for q in quarantined]), np.array([q.position for q in quarantined])),
                    self.backend,
                )
            else:
                # Built from checked rows at this very change: what it left out is
                # all that is quarantined (a damaged row after that is found by
                # the next rebuild, and by `verifier watchlist stats`, which scans all).
                rows, positions = template_rows(index.left_out)
                quarantined = self.store.still_quarantined(
                    self.engine.template_spec, list(zip(rows.tolist(), positions.tolist())))
            index.set_expiries(_numeric_expiries(self.store.expiries()))
            index.sweep(time.time())
            self._set_unmigrated(self.store.unmigrated(self.model_id))
            self._index = index
            self._served_id = tag.store_id
            self._quarantined = tuple(quarantined)
        metrics.QUARANTINED.set(len(quarantined))
        for bad in quarantined[: self.settings.quarantine_log_limit]:
            log.error("quarantined template %d of subject %r in watch-list %r (store row %d): %s: %s",
                      bad.position, bad.subject_id, bad.watchlist, bad.row, bad.reason, bad.detail)
        report = LoadReport(source, index.size(), time.perf_counter() - start, tuple(quarantined))
        log.info("watch-list index from %s: %d templates in %.2f s, %d quarantined",
                 report.source, report.templates, report.seconds, len(quarantined))
        self._set_availability(Availability(State.SERVING))
        return report

    def _take_preloaded(self, tag: SnapshotTag) -> WatchlistIndex | None:
        """The index preloaded with an installed snapshot, if there is one and it
        was built from exactly this store at this change, for this model."""
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is None:
            return None
        loaded = preloaded.result()
        if loaded is None or loaded.tag != tag:
            log.warning("the index that came with the snapshot does not match the installed store (%s); "
                        "loading or rebuilding it", "unreadable" if loaded is None else "another store or change")
            return None
        return loaded.index

    def _set_unmigrated(self, unmigrated: dict[str, Unmigrated]) -> None:
        """Record (log and count) which lists hold subjects of another model."""
        self._unmigrated = unmigrated
        metrics.UNMIGRATED.clear()
        for need in unmigrated.values():
            metrics.UNMIGRATED.labels(need.watchlist).set(len(need.rows))
            log.error("watch-list %r is refused for identification: %s", need.watchlist, _needs(need, self.model_id))

    def _refresh_unmigrated(self, watchlist: str) -> None:
        """After a removal: the list serves again once its last unmigrated subject is gone."""
        found = self.store.unmigrated(self.model_id, watchlist)
        unmigrated = {name: need for name, need in self._unmigrated.items() if name != watchlist} | found
        if unmigrated != self._unmigrated:
            if watchlist not in found:
                log.info("watch-list %r holds only templates of %s again", watchlist, self.model_id)
                metrics.UNMIGRATED.remove(watchlist)
            else:
                metrics.UNMIGRATED.labels(watchlist).set(len(found[watchlist].rows))
            self._unmigrated = unmigrated

    def close(self) -> None:
        """Save the index (tagged with the store's change sequence) and close the store."""
        with self._writes:
            if self._closed:
                return
            self._closed = True
            if self._store is None:
                return
            try:
                if self._index is not None and self.snapshot is not None and self._availability.serving:
                    self._index.save(self.snapshot, self._tag())
            except (StoreError, OSError):
                log.exception("the watch-list index was not saved; the next start rebuilds it from the store")
            finally:
                if self._index is not None:
                    self._index.close()
                self._store.close()

    def create_watchlist(self, name: str, description: str) -> Watchlist:
        identifier(name, "name")
        text(description, "description")
        self.require_writable()
        with self._writes, self._store_faults():
            index = self._ready_index()
            require_room(self.store, name, self.settings.max_watchlists)
            created = self.store.create_watchlist(name, description)
            index.add_watchlist(name)
            seq = self.store.last_seq
        self._committed(seq)
        return created

    def delete_watchlist(self, name: str, force: bool = False) -> Watchlist:
        """Delete a watch-list; one still holding subjects only when ``force`` is given.
        Once this returns, no search looks in it."""
        identifier(name, "name")
        self.require_writable()
        with self._writes, self._store_faults():
            index = self._ready_index()
            deleted = self.store.delete_watchlist(name, force)
            index.drop_watchlist(name)
            if name in self._unmigrated:
                self._refresh_unmigrated(name)
            seq = self.store.last_seq
        self._committed(seq)
        return deleted

    def watchlists(self) -> list[Watchlist]:
        with self._store_faults():
            return self._open_store().watchlists()

    def watchlists_page(self, page_size: int, page_token: str) -> tuple[list[Watchlist], str]:
        """One page of the watch-lists by name, and the token of the next ('' on
        the last): ``page_size`` 0 is the configured default, and no page is larger
        than ``watchlist.max_list_page_size``. The token is the last name listed,
        base64url-encoded; one this service could not have returned is FIELD_INVALID."""
        size = min(page_size or self.settings.list_page_size, self.settings.max_list_page_size)
        after = ""
        if page_token:
            try:
                after = base64.urlsafe_b64decode(page_token.encode("ascii")).decode("utf-8")
                identifier(after, "page_token")
            except (ValueError, VerifierError) as exc:
                raise VerifierError(Reason.FIELD_INVALID, "page_token is not one this service returned",
                                    field="page_token") from exc
        with self._store_faults():
            page = self._open_store().watchlists_after(after, size + 1)
        more = len(page) > size
        page = page[:size]
        return page, base64.urlsafe_b64encode(page[-1].name.encode()).decode("ascii") if more else ""

    def subject(self, watchlist: str, subject_id: str) -> Subject:
        identifier(watchlist, "watchlist")
        identifier(subject_id, "subject_id")
        with self._store_faults():
            return self._open_store().subject(watchlist, subject_id)

    def enrol(self, entry: SubjectEntry, samples: list[bytes | Template], allow_partial: bool = False) -> Enrolment:
        """Store a subject with a template from each sample (image or template).

        An image without a usable face fails the whole enrolment, unless
        ``allow_partial``, when it is reported and left out; a template of
        another model always fails it. The subject is stored with all its
        templates or not at all.
        """
        check_entry(entry)
        self.require_writable()
        if not samples:
            raise VerifierError(Reason.REQUEST_INCOMPLETE, "an enrolment needs at least one image or template")
        limit = self.settings.max_templates_per_subject
        if len(samples) > limit:
            raise VerifierError(
                Reason.TOO_MANY_TEMPLATES, f"{len(samples)} samples, at most {limit} per subject",
                samples=len(samples), limit=limit,
            )
        for i, sample in enumerate(samples):
            if isinstance(sample, Template):
                try:
                    sample.require(self.engine.template_spec)
                except VerifierError as error:
                    raise error.with_detail(sample=i)
        self._ready_index()
        outcomes, timings = self._analyse(samples)
        failed = [(o.index, o.error) for o in outcomes if o.error is not None]
        if failed and (not allow_partial or len(failed) == len(outcomes)):
            first, error = failed[0]
            raise error.with_detail(sample=first, failed_samples=",".join(str(i) for i, _ in failed))
        used = [o for o in outcomes if o.error is None]
        vectors = [self._template_of(samples[o.index], o).vector for o in used]
        templates = [Template(self.model_id, vector) for vector in vectors]
        # The images the templates were made from, as sent, by template position:
        # the record a later model change re-extracts from.
        images = {position: sample for position, o in enumerate(used) if isinstance(sample := samples[o.index], bytes)}
        start = time.perf_counter()
        with self._writes, self._store_faults():
            index = self._ready_index()
            subject = self.store.add_subject(entry, templates, images)
            index.add_subject(entry.watchlist, subject.row, np.stack(vectors), _epoch(entry))
            seq = self.store.last_seq
        timings["store"] = (time.perf_counter() - start) * 1000.0
        self._committed(seq)
        return Enrolment(subject, outcomes, timings)

    def _analyse(self, samples: list[bytes | Template]) -> tuple[list[SampleOutcome], dict[str, float]]:
        images = [i for i, sample in enumerate(samples) if isinstance(sample, bytes)]
        batch = [samples[i] for i in images]
        results = self.engine.analyse_batch(batch, Selection.LARGEST, ImageUse.ENROLMENT) if images else []  # type: ignore[arg-type]
        faces = dict(zip(images, results))
        outcomes = []
        for i, sample in enumerate(samples):
            if isinstance(sample, Template):
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
        identifier(watchlist, "watchlist")
        identifier(subject_id, "subject_id")
        self.require_writable()
        with self._writes, self._store_faults():
            index = self._ready_index()
            subject = self.store.remove_subject(watchlist, subject_id)
            index.remove_subject(watchlist, subject.row, subject.template_count)
            if watchlist in self._unmigrated:
                self._refresh_unmigrated(watchlist)
            seq = self.store.last_seq
        self._committed(seq)
        return subject

    def replace_partner_list(
        self, name: str, description: str, provenance: dict, subjects: list[dict]
    ) -> int:
        """Replace a partner's list wholly (one transaction; searches see the old
        list or the new one); returns the change's sequence number. A new
        partner list counts against watchlist.max_watchlists like any other."""
        identifier(name, "watchlist")
        self.require_writable()
        with self._writes, self._store_faults():
            index = self._ready_index()
            require_room(self.store, name, self.settings.max_watchlists)
            _, rows = self.store.replace_partner_list(name, description, provenance, subjects)
            index.drop_watchlist(name)
            index.add_watchlist(name)
            for row, subject in zip(rows, subjects):
                self._index_subject(index, row, name, subject_templates(subject), subject["expires_at"])
            seq = self.store.last_seq
        self._committed(seq)
        return seq

    def identify(
        self, probe: bytes | Template, watchlists: list[str] | None = None, top_k: int | None = None
    ) -> Identification:
        """The best-scoring live subjects at or above the threshold, best first,
        in the named watch-lists (all of them when none are named)."""
        index = self._ready_index()
        names = list(dict.fromkeys(watchlists)) if watchlists else index.watchlists()
        for name in names:
            identifier(name, "watchlists")
            if not index.has_watchlist(name):
                raise VerifierError(Reason.WATCHLIST_NOT_FOUND, f"no watch-list named {name!r}", watchlist=name)
        self._require_migrated(names)
        wanted = min(top_k or self.settings.default_top_k, self.settings.max_top_k)
        face: FaceResult | None = None
        if isinstance(probe, Template):
            probe.require(self.engine.template_spec)
            template, timings = probe, {}
        else:
            face = self.engine.analyse(probe, Selection.LARGEST, ImageUse.LIVE)
            template, timings = face.template, dict(face.timings_ms)
        deadlines.check("search")
        start = time.perf_counter()
        now = time.time()
        with self._store_faults():
            threshold = self.thresholds.for_gallery(index.size(names))
            outcome = index.search(template.vector, names, wanted, threshold.value, now)
            subjects = self.store.subjects_by_row([hit.row for hit in outcome.hits])
        live = [hit for hit in outcome.hits if hit.row in subjects]
        candidates = [Candidate(rank, subjects[hit.row], hit.score) for rank, hit in enumerate(live, start=1)]
        # Taken as a non-mated search (a traveller truly on a list counts too: verifier.drift).
        drift.MONITOR.observe(drift.IDENTIFICATION, candidates[0].score if candidates else None, threshold.value,
                              threshold.fpir)
        timings["search"] = (time.perf_counter() - start) * 1000.0
        if outcome.expired_skipped:
            index.sweep(now)
        with self._store_faults():
            provenance = self.store.provenance(sorted({c.subject.entry.watchlist for c in candidates}))
            # The answer came from memory: it stands only while the store it was built from is still there.
            self.store.check_identity()
        return Identification(candidates, threshold, face, outcome.searched, timings, self.model_id, provenance)

    def _require_migrated(self, names: list[str]) -> None:
        """Refuse a search that would look in a list holding subjects of another
        model: they could not be found, and a "no hit" would be a silent miss."""
        unmigrated = self._unmigrated
        refused = [unmigrated[name] for name in names if name in unmigrated]
        if not refused:
            return
        first = refused[0]
        others = f" (and {len(refused) - 1} more watch-lists)" if len(refused) > 1 else ""
        raise VerifierError(
            Reason.WATCHLIST_NEEDS_MIGRATION,
            f"watch-list {first.watchlist!r}{others} cannot be searched: {_needs(first, self.model_id)}",
            watchlist=first.watchlist, watchlists=",".join(n.watchlist for n in refused), model_id=self.model_id,
            unmigrated=len(first.rows), migratable=len(first.rows - first.without_images),
            without_images=len(first.without_images),
        )

    def consistency(self) -> Consistency:
        """Check the index against the store, after sweeping out expired subjects."""
        with self._writes, self._store_faults():
            index = self._ready_index()
            now = time.time()
            index.sweep(now)
            expected = {
                (name, int(key))
                for name, found in self.store.searchable(self.engine.template_spec, now)[0].items()
                for key in template_ids(found.rows, found.positions)
            }
            actual = {(name, int(key)) for name, keys in index.keys().items() for key in keys}
        return Consistency(
            len(expected), len(actual),
            frozenset(key for _, key in expected - actual), frozenset(key for _, key in actual - expected),
        )


def _needs(need: Unmigrated, model_id: str) -> str:
    """What an operator must do about a list's subjects of another model, in words."""
    bare = len(need.without_images)
    return (
        f"{len(need.rows)} subjects have no template of {model_id}; {len(need.rows) - bare} can be migrated from "
        f"their stored images (`verifier watchlist migrate`, server stopped), {bare} were enrolled without images "
        "and must be re-enrolled or removed"
    )


def subject_templates(subject: dict) -> list[Template]:
    """The templates of a subject record (feed or bundle), already checked."""
    return [template_of_record(t) for t in subject["templates"]]


def _epoch(entry: SubjectEntry) -> float | None:
    return None if entry.expires_at is None else entry.expires_at.timestamp()


def _numeric_expiries(expiries: dict[int, object]) -> dict[int, float]:
    """The stored expiries the index can compare: a value that is not a number
    (a damaged row) is logged and left out, so that subject stays searchable."""
    kept: dict[int, float] = {}
    for row, when in expiries.items():
        if isinstance(when, (int, float)) and when == when:
            kept[row] = float(when)
        else:
            log.warning("subject row %d has a stored expiry %r that is not a time: it is searched as never expiring "
                        "(see `verifier watchlist stats`)", row, str(when)[:64])
    return kept
