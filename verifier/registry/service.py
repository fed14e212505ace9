"""Registry use cases, free of any transport: register, verify by traveller id,
update, erase, read, and the retention sweep.

Registration runs the gate's own checks (:class:`verifier.gate.service.GateService`
components: its quality assessor on both images, its matcher at the 1:1
threshold, its document-photo replay detector, so a replayed chip photo cannot
register anyone), then searches both faces against every registered traveller
and stores the traveller only when the duplicate decision, calibrated at the
registry's current size (:mod:`verifier.registry.duplicates`), finds no other
traveller: a certain duplicate is refused (DUPLICATE_IDENTITY), a suspected
one is sent to an officer (DUPLICATE_SUSPECTED). The search and the insert run
under one lock, so two registrations of one face racing each other cannot both pass.

The store is the source of truth: the index (FAISS exact or IVF, or Milvus:
:mod:`verifier.vectors`) is derived, loaded from a snapshot only when it was
saved at the store's current change, else rebuilt. Writes commit to the store
first, then change the index under the same lock.

Failing closed: while the index is not loaded, registration and anything that
searches is refused (INDEX_NOT_READY), never answered "no duplicate"; an
index that fails while serving (Milvus down, slow or drifted from the store)
is taken out of service with INDEX_UNAVAILABLE until it is loaded again and
agrees with the store (:mod:`verifier.registry.indexing`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path

import numpy as np

from verifier import deadlines
from verifier.config import RegistrySettings, Settings
from verifier.errors import Reason, VerifierError
from verifier.gate.policy import LIVE_IS_DOCUMENT_PHOTO, LIVE_SHOWS_DISPLAY, NO_MATCH
from verifier.gate.service import GateService
from verifier.imaging import ImageUse
from verifier.matching import Decision
from verifier.pipeline import FaceResult, Selection
from verifier.registry.duplicates import DuplicatePolicy, Finding, fuse, refusal
from verifier.registry.indexing import IndexedRegistry
from verifier.registry.store import CHIP, LIVE, RegistryStore, Traveller, not_found
from verifier.security.audit import CHANGE, AuditLog, Entry, recorded_change
from verifier.templates import Template
from verifier.validation import identifier, text
from verifier.vectors.base import VectorIndex
from verifier.vectors.faiss_index import FaissIndex
from verifier.watchlist.index import TEMPLATE_BITS, template_ids
from verifier.watchlist.availability import Availability
from verifier.watchlist.service import WatchlistService
from verifier.watchlist.store import Applied, private_directory, private_file

log = logging.getLogger(__name__)

KEY_BYTES = 32
# Characters a document number keeps when hashed: case and separators do not make another document.
_DOCUMENT_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


class RegistryKeyMissing(Exception):
    """No document key where one is configured: the registry is not started."""


def write_key(path: Path) -> bool:
    """Write a random document key (owner-only) unless one exists; True if written."""
    private_directory(path.parent)
    if path.exists():
        return False
    private_file(path)
    path.write_bytes(secrets.token_bytes(KEY_BYTES))
    return True


def read_key(path: Path) -> bytes:
    if not path.is_file():
        raise RegistryKeyMissing(f"no registry document key at {path}: create one with `verifier registry init` "
                                 "(development) or install the agency's key; a default key is never used")
    key = path.read_bytes()
    if len(key) < 16:
        raise RegistryKeyMissing(f"the registry document key at {path} is shorter than 16 bytes")
    return key


def document_hash(key: bytes, document_number: str) -> str:
    """The keyed hash a document number is stored as (normalised: upper case, separators dropped)."""
    normal = "".join(c for c in document_number.upper() if c in _DOCUMENT_ALPHABET)
    if not 1 <= len(normal) <= 64:
        raise VerifierError(Reason.FIELD_INVALID, "a document number has 1 to 64 letters and digits",
                            field="document_number")
    return hmac.new(key, normal.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Registration:
    traveller: Traveller
    match: Decision
    quality_unified: float
    replay_score: float | None
    nearest_score: float | None
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TravellerCheck:
    traveller_id: str
    match: Decision
    live: FaceResult
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stats:
    travellers: int
    templates: int
    index: str
    ready: bool


def _rows(keys: np.ndarray) -> np.ndarray:
    return np.asarray(keys, dtype=np.int64) >> TEMPLATE_BITS


def _store_faults(method: Callable) -> Callable:
    """A use case whose store fault (the store gone, the disk failing) takes the
    store's services out of service and is answered with its reason, as the
    watch-lists' are (one store: verifier.watchlist.service)."""

    @wraps(method)
    def guarded(self: "RegistryService", *args: object, **kwargs: object) -> object:
        with self.watchlists.store_faults():
            return method(self, *args, **kwargs)

    return guarded


class RegistryService(IndexedRegistry):
    def __init__(self, settings: Settings, gate: GateService, watchlists: WatchlistService,
                 audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.config: RegistrySettings = settings.registry
        self.gate = gate
        self.watchlists = watchlists
        self.audit = audit
        self.duplicate_policy = DuplicatePolicy(self.config)
        self.key = read_key(self.config.key_file(settings.data_dir))
        self.snapshot = self.config.snapshot_file(settings.data_dir) if self.config.index != "milvus" else None
        self._registry: RegistryStore | None = None
        self._index: VectorIndex | None = None
        self._writes = threading.Lock()
        # Verifications not yet written: traveller row to the time of its last use.
        self._uses: dict[int, float] = {}
        self._uses_lock = threading.Lock()
        # Set when the store went missing: the store that comes back may be an
        # older copy, so the index is built again from it (see supervise).
        self._stale = False
        # Why the index was taken out of service while serving (Milvus failed,
        # timed out or drifted); None while serving or before the first load.
        self._fault: VerifierError | None = None
        # Health's update, called when the registry goes in or out of service (set by supervise).
        self._health: Callable[[], None] = lambda: None
        watchlists.on_applied(self._follow)
        watchlists.on_availability(self._store_availability)

    def _store_availability(self, availability: Availability) -> None:
        if availability.reason is Reason.STORE_MISSING:
            self._stale = True

    @property
    def model_id(self) -> str:
        return self.gate.model_id

    @property
    def dimension(self) -> int:
        return self.gate.engine.embedder.dimension


    @property
    def store(self) -> RegistryStore:
        found = self.watchlists.serving_store()  # refused with the store's reason while it is out of service
        if self._registry is None or self._registry.store is not found:
            self._registry = RegistryStore(found)
        return self._registry

    def close(self) -> None:
        """Write the gathered last-used times, save the FAISS index's snapshot
        (tagged with the store's change) and release the index."""
        if self.watchlists.read_only_for is None:
            try:
                self.flush_uses()
            except Exception:  # noqa: BLE001 - shutting down: say what is lost
                log.exception("registry last-used times lost at shutdown")
        with self._writes:
            if self._index is None:
                return
            if isinstance(self._index, FaissIndex):
                self._index.wait()
                if self.snapshot is not None:
                    try:
                        self._index.save(self.snapshot, self._tag())
                    except (OSError, VerifierError) as error:
                        log.error("registry index snapshot not saved: %s", error)
            self._index.close()
            self._index = None

    # --- the checks -----------------------------------------------------------------------------------------

    def _examine(self, chip: bytes, live: bytes) -> tuple[FaceResult, FaceResult, Decision, float, float | None]:
        """The gate's checks on a chip photo and a live capture: quality of both,
        1:1 match, and that the live capture is not the chip photo replayed."""
        chip_face = self.gate.engine.analyse(chip, Selection.LARGEST, ImageUse.DOCUMENT)
        live_face = self.gate.engine.analyse(live, Selection.LARGEST, ImageUse.LIVE)
        causes: list[str] = []
        live_quality = self.gate.quality.assess(live_face)
        chip_quality = self.gate.quality.assess(chip_face)
        causes += live_quality.codes
        causes += [f"CHIP_{code}" for code in chip_quality.codes]
        match = self.gate.matcher.decide(live_face.template, chip_face.template)
        if not match.match:
            causes.append(NO_MATCH)
        replay = None
        if live_face.aligned is not None and chip_face.aligned is not None:
            replay = self.gate.replay.score(live_face.aligned, chip_face.aligned)
        if replay is None or self.gate.replay.is_replay(replay):
            causes.append(LIVE_IS_DOCUMENT_PHOTO if replay is not None else "REPLAY_NOT_CHECKED")
        if live_face.aligned is not None and self.gate.display.is_display(self.gate.display.score(live_face.aligned)):
            causes.append(LIVE_SHOWS_DISPLAY)
        if causes:
            raise VerifierError(Reason.REGISTRATION_REFUSED, "the captures did not pass the gate's checks: "
                                + ", ".join(causes), causes=",".join(causes), score=f"{match.score:.4f}")
        return chip_face, live_face, match, live_quality.unified, replay

    def _duplicates(self, templates: list[Template], own_row: int | None, document: str | None) -> Finding:
        """The duplicate decision over the registered travellers (other than
        ``own_row``) nearest either new face, at the index's current size; a
        candidate holding ``document`` (its hash) adds that evidence. Refused
        with the traveller it names when the decision finds one; an index entry
        the store does not hold is still refused, never passed."""
        index = self._ready_index()
        results = []
        for template in templates:
            with self._index_faults(index):
                scores, keys = index.search(template.vector, self.config.search_depth)
            results.append((scores, _rows(keys)))
        with self._index_faults(index):
            size = index.size()
        candidates = fuse(results, exclude=own_row)
        travellers = self.store.by_rows([candidate.row for candidate in candidates])
        same = frozenset(row for row, other in travellers.items() if document and other.document_hash == document)
        finding = self.duplicate_policy.decide(candidates, size, same)
        other = travellers.get(finding.candidate.row) if finding.candidate is not None else None
        refused = refusal(finding, other.traveller_id if other is not None else "")
        if refused is not None:
            raise refused
        return finding

    # --- use cases ------------------------------------------------------------------------------------------

    @_store_faults
    def register(self, traveller_id: str, document_number: str, chip: bytes, live: bytes, consent_gate: str,
                 consent_text_version: str, consent_at: float | None = None) -> Registration:
        self.watchlists.require_writable()  # a replica refuses before any face work
        identifier(traveller_id, "traveller_id")
        identifier(consent_gate, "consent.gate_id")
        identifier(consent_text_version, "consent.text_version")
        hashed = document_hash(self.key, document_number)
        start = time.perf_counter()
        chip_face, live_face, match, quality, replay = self._examine(chip, live)
        templates = [chip_face.template, live_face.template]
        analysed = time.perf_counter()
        deadlines.check("search")
        with self._writing():
            nearest = self._duplicates(templates, None, hashed).nearest
            row = self.store.register(traveller_id, hashed, consent_at or time.time(), consent_gate,
                                      consent_text_version, templates)
            self._index_templates(row, templates)
            seq = self.store.store.last_seq
        self.watchlists.announce(seq)
        timings = {"analyse": (analysed - start) * 1000.0, "search_and_store": (time.perf_counter() - analysed) * 1000}
        return Registration(self.store.traveller(traveller_id), match, quality, replay, nearest, timings)

    def _index_templates(self, row: int, templates: list[Template]) -> None:
        index = self._ready_index()
        served = [(position, t.vector) for position, t in enumerate(templates) if t.model_id == self.model_id]
        if served:
            keys = template_ids(np.full(len(served), row), np.array([p for p, _ in served]))
            with self._index_faults(index):
                index.add(keys, np.stack([v for _, v in served]))

    def _unindex(self, row: int, count: int) -> None:
        index = self._ready_index()
        with self._index_faults(index):
            index.remove(template_ids(np.full(count, row), np.arange(count)))

    @_store_faults
    def verify(self, traveller_id: str, live: bytes) -> TravellerCheck:
        """The live capture against the traveller's enrolled templates (1:1, best of them).

        A match counts as a use for retention (written with others every
        ``last_used_flush_seconds``: see :meth:`flush_uses`) on the primary only: a replica
        writes nothing of its own (a local change would take the sequence
        number of the primary's next one, which the replica would then skip as
        applied, an erasure included), so uses seen only at a fallback site do
        not extend a record's retention."""
        identifier(traveller_id, "traveller_id")
        traveller = self.store.traveller(traveller_id)
        start = time.perf_counter()
        face = self.gate.engine.analyse(live, Selection.LARGEST, ImageUse.LIVE)
        served = [t for t in traveller.templates if t.model_id == self.model_id]
        if not served:
            raise VerifierError(Reason.TEMPLATE_MODEL_MISMATCH,
                                f"traveller {traveller_id!r} has no template of the served model; update it",
                                traveller_id=traveller_id, model_id=self.model_id)
        decision = max((self.gate.matcher.decide(face.template, t) for t in served), key=lambda d: d.score)
        timings = dict(face.timings_ms)
        timings["compare"] = (time.perf_counter() - start) * 1000.0 - sum(face.timings_ms.values())
        if decision.match and self.watchlists.read_only_for is None:
            with self._uses_lock:
                self._uses[traveller.row] = time.time()
        return TravellerCheck(traveller_id, decision, face, timings)

    @_store_faults
    def update(self, traveller_id: str, chip: bytes, live: bytes, document_number: str = "") -> Registration:
        """New passport or refreshed template: the new captures pass the gate's
        checks, the new live capture matches the enrolled templates, and no other
        traveller holds the face; only then are the old templates replaced."""
        self.watchlists.require_writable()
        identifier(traveller_id, "traveller_id")
        hashed = document_hash(self.key, document_number) if document_number else None
        before = self.store.traveller(traveller_id)
        chip_face, live_face, match, quality, replay = self._examine(chip, live)
        enrolled = [t for t in before.templates if t.model_id == self.model_id]
        if enrolled:
            best = max(self.gate.matcher.decide(live_face.template, t).score for t in enrolled)
            if best < self.gate.matcher.threshold.value:
                raise VerifierError(Reason.REGISTRATION_REFUSED, "the new capture does not match the enrolled "
                                    "templates: an update cannot change whose record this is",
                                    causes="NO_MATCH_ENROLLED", score=f"{best:.4f}")
        templates = [chip_face.template, live_face.template]
        with self._writing():
            nearest = self._duplicates(templates, before.row, hashed).nearest
            self.store.update(traveller_id, templates, hashed)
            self._unindex(before.row, len(before.templates))
            self._index_templates(before.row, templates)
            seq = self.store.store.last_seq
        self.watchlists.announce(seq)
        return Registration(self.store.traveller(traveller_id), match, quality, replay, nearest)

    @_store_faults
    def erase(self, traveller_id: str) -> Traveller:
        """Gone from store (rows overwritten, feed scrubbed, log truncated), index and snapshot."""
        self.watchlists.require_writable()
        identifier(traveller_id, "traveller_id")
        with self._writes:
            erased = self.store.erase(traveller_id)
            with self._uses_lock:
                self._uses.pop(erased.row, None)
            if self._index is not None:  # else the next load finds the collection ahead of the store
                self._unindex(erased.row, len(erased.templates))
            self._drop_snapshot()
            seq = self.store.store.last_seq
        self.watchlists.announce(seq)
        return erased

    def _drop_snapshot(self) -> None:
        """A snapshot holds every template as of its save, the erased one too: it
        is deleted (rewritten at the next shutdown, from the index without it)."""
        if self.snapshot is not None and self.snapshot.exists():
            os.unlink(self.snapshot)

    @_store_faults
    def traveller(self, traveller_id: str) -> Traveller:
        identifier(traveller_id, "traveller_id")
        return self.store.traveller(traveller_id)

    def stats(self) -> Stats:
        index = self._index
        size = 0
        if index is not None:
            with self._index_faults(index):
                size = index.size()
        return Stats(self.store.count(), size, self.config.index, self.ready)

    def sweep(self, now: float | None = None) -> list[str]:
        """Erase the travellers unused for the retention period, each on the audit trail
        (the uses gathered since the last flush written first)."""
        self.flush_uses()
        cutoff = (now or time.time()) - self.config.retention_days * 86400.0
        erased = []
        for traveller_id in self.store.unused_since(cutoff, self.config.sweep_batch):
            entry = Entry(identity="registry-retention", role="system", rpc="registry.retention_sweep",
                          kind=CHANGE, outcome="OK", targets=(f"traveller:{traveller_id}",),
                          decision=f"erased: unused for {self.config.retention_days:g} days")
            try:
                if self.audit is not None:
                    recorded_change(self.audit, entry, lambda t=traveller_id: self.erase(t))
                else:
                    self.erase(traveller_id)
            except VerifierError as error:
                if error.reason is not Reason.SUBJECT_NOT_FOUND:
                    raise
                continue
            erased.append(traveller_id)
        if erased:
            log.info("retention sweep erased %d travellers", len(erased))
        return erased

    def flush_uses(self) -> int:
        """Write the verifications' last-used times gathered since the last flush,
        in one change; how many travellers it touched. On a store fault they are
        kept for the next flush."""
        with self._uses_lock:
            uses, self._uses = self._uses, {}
        if not uses:
            return 0
        try:
            self.store.touch(uses)
        except Exception:
            with self._uses_lock:
                for row, at in uses.items():
                    self._uses[row] = max(at, self._uses.get(row, at))
            raise
        self.watchlists.announce(self.store.store.last_seq)
        return len(uses)

    def supervise(self, stop: threading.Event, on_ready: Callable[[], None] = lambda: None) -> None:
        """Load the index once the store serves (then call ``on_ready``: health
        reports the registry serving), then sweep every retention_sweep_seconds."""
        self._health = on_ready
        next_sweep = time.monotonic() + self.config.retention_sweep_seconds
        next_flush = time.monotonic() + self.config.last_used_flush_seconds
        next_check = time.monotonic() + self.config.milvus_check_seconds
        next_retry = time.monotonic()
        while not stop.wait(0.2):
            if self._index is None or self._stale:
                if self.watchlists.availability.serving and time.monotonic() >= next_retry:
                    next_retry = time.monotonic() + self.config.milvus_retry_seconds
                    self._reload()
                continue
            if self.config.index == "milvus" and time.monotonic() >= next_check:
                next_check = time.monotonic() + self.config.milvus_check_seconds
                self.check_collection()
            if self.watchlists.read_only_for is not None or time.monotonic() < next_flush:
                continue  # a replica erases what its primary erases, and writes nothing of its own
            next_flush = time.monotonic() + self.config.last_used_flush_seconds
            try:
                self.flush_uses()
            except Exception:  # noqa: BLE001 - kept for the next round
                log.exception("registry last-used times not written; trying again")
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.config.retention_sweep_seconds
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - the next round tries again
                    log.exception("registry retention sweep failed")


    def _follow(self, applied: Applied) -> None:
        """A replica's index follows the registry changes applied from the feed."""
        if self._index is None:
            return
        for row, templates in applied.travellers:
            stale = self._index_keys_of(row)
            if len(stale):
                with self._index_faults(self._index):
                    self._index.remove(stale)
            if templates is not None:
                self._index_templates(row, templates)

    def _index_keys_of(self, row: int) -> np.ndarray:
        return template_ids(np.full(1 << TEMPLATE_BITS, row), np.arange(1 << TEMPLATE_BITS))
