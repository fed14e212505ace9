"""The gate transaction, free of any transport: Screen and the walk-through stream.

One answer per traveller from one call: every usable face of the live
frame(s) is found and embedded in one pipeline run, the traveller (the
largest face of the best-quality frame) is judged for quality, compared with
the chip photo (1:1) and with the chip photo's pixels (document-photo
replay), and *every* face is searched against the watch-lists. The policy
turns the findings into ACCEPT, RETRY or REFER.

Failing closed: bad request bytes are refused (the kiosk must fix its
request) and a passed deadline drops the work; anything else that goes
wrong - a reference without a face, a watch-list outage, an internal fault -
is a finding, and never an ACCEPT.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np

from verifier import deadlines, drift
from verifier.calibration import IdentificationThreshold, check_utility_calibration
from verifier.config import Settings
from verifier.errors import ACQUISITION_FAILURES, Kind, ModelPackError, Reason, VerifierError
from verifier.face.quality import PERCENTILES, QualityAssessor, QualityReport, quality_path
from verifier.gate.motion import static_picture
from verifier.gate.policy import MOVE_CLOSER, NO_FACE, Findings, GateDecision, GatePolicy, Verdict
from verifier.gate.display import DisplayPatternDetector
from verifier.gate.replay import ReplayDetector
from verifier.imaging import ImageUse
from verifier.matching import Decision
from verifier.pipeline import FaceResult, FrameFaces, Selection
from verifier.service import VerificationService
from verifier.templates import Template
from verifier.watchlist.service import WatchlistService

log = logging.getLogger(__name__)

# Errors that mean the request itself is wrong: refused, not decided on.
_REQUEST_KINDS = frozenset({Kind.INVALID_INPUT, Kind.DEADLINE})


@dataclass(frozen=True)
class Hit:
    watchlist: str
    subject_id: str
    reason: str
    source_agency: str
    external_ref: str
    score: float
    face_index: int


@dataclass(frozen=True)
class ScreenOutcome:
    verdict: Verdict
    match: Decision | None = None
    hits: tuple[Hit, ...] = ()
    watchlist_searched: bool = False
    watchlist_threshold: IdentificationThreshold | None = None
    quality: QualityReport | None = None
    replay_score: float | None = None
    replay_threshold: float = 0.0
    # The display-grid check of the traveller's live crop (None: no crop to check).
    display_pattern_score: float | None = None
    display_pattern_threshold: float = 0.0
    # The PAD model's live probability for the traveller (None: PAD is off).
    pad_score: float | None = None
    pad_threshold: float | None = None
    faces: tuple[FaceResult, ...] = ()
    frame_index: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    model_id: str = ""
    model_pack: str = ""


@dataclass
class _Reference:
    template: Template | None
    face: FaceResult | None


class _Clock:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self._start) * 1000.0
        self._start = now


def _side(face: FaceResult) -> float:
    box = face.face.box
    return float(min(box[2] - box[0], box[3] - box[1]))


class GateService:
    def __init__(self, settings: Settings, verification: VerificationService,
                 watchlist: WatchlistService | None) -> None:
        self.settings = settings
        self.gate = settings.gate
        self.engine = verification.engine
        self.matcher = verification.matcher
        self.watchlist = watchlist
        self.policy = GatePolicy(settings.gate)
        self.replay = ReplayDetector(self.gate.replay_threshold, self.gate.replay_iterations, self.gate.replay_epsilon)
        self.display = DisplayPatternDetector(self.gate.display_pattern_threshold)
        self.quality = QualityAssessor.from_settings(settings, self.engine.embedder.utility_members)
        check_utility_calibration(self.quality.calibration, quality_path(settings), len(PERCENTILES))
        # Passive PAD runs only where it decides: a score nobody acts on is not worth its cost per traveller.
        self.pad = self.gate.pad_threshold is not None
        if self.pad and self.engine.liveness is None:
            raise ModelPackError(f"gate.pad_threshold is set but pack {settings.models.pack!r} has no liveness "
                                 "model: presentation attacks would go unchecked")
        drift_path = settings.matching.drift_path
        drift.MONITOR.configure(settings.matching.drift_factor, settings.evaluation.confidence,
                                None if drift_path is None else settings.data_dir / drift_path)

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    def screen(self, frames: list[bytes], reference: bytes | Template, attempt: int = 1) -> ScreenOutcome:
        """One traveller: the best of ``frames`` judged against ``reference``."""
        if not frames or len(frames) > self.gate.max_frames:
            raise VerifierError(Reason.FIELD_INVALID, f"send 1 to {self.gate.max_frames} frames", field="frames")
        clock = _Clock()
        try:
            ref = self._reference(reference)
            clock.lap("reference")
            analysed: list[tuple[int, FrameFaces]] = []
            too_small = False
            for index, frame in enumerate(frames):
                try:
                    analysed.append((index, self.engine.analyse_all(frame, liveness=self.pad)))
                except VerifierError as error:
                    if error.reason not in ACQUISITION_FAILURES:
                        raise error.with_detail(field=f"frames[{index}]")
                    too_small = too_small or error.reason is Reason.FACE_TOO_SMALL
            clock.lap("analyse")
            if ref is None:
                return self._outcome(Findings(attempt=attempt, reference_unusable=True), clock)
            if not analysed:
                return self._outcome(Findings(attempt=attempt, face_too_small=too_small), clock)
            scored = [(index, frame, self.quality.assess(frame.faces[0])) for index, frame in analysed]
            index, frame, quality = max(scored, key=lambda item: item[2].unified)
            clock.lap("quality")
            return self._judge(frame, index, quality, ref, attempt, None, clock)
        except VerifierError as error:
            if error.kind in _REQUEST_KINDS:
                raise
            log.warning("screen referred on %s: %s", error.reason.value, error.message)
            return self._outcome(Findings(attempt=attempt, internal_fault=True), clock)
        except Exception:  # noqa: BLE001 - a fault is a referral, never an accept
            log.exception("screen failed; referring the traveller")
            return self._outcome(Findings(attempt=attempt, internal_fault=True), clock)

    def open_stream(self, reference: bytes | Template) -> "StreamSession":
        """A walk-through session; the reference is analysed once, here."""
        return StreamSession(self, self._reference(reference))

    def _reference(self, reference: bytes | Template) -> _Reference | None:
        """The chip photo's face and template, or None when it has no usable
        face or is a template of another model (REFERENCE_UNUSABLE)."""
        try:
            if isinstance(reference, Template):
                reference.require(self.engine.template_spec)
                return _Reference(reference, None)
            face = self.engine.analyse(reference, Selection.LARGEST, ImageUse.DOCUMENT)
            return _Reference(face.template, face)
        except VerifierError as error:
            if error.kind is Kind.DEADLINE or (error.kind is Kind.INVALID_INPUT and isinstance(reference, Template)):
                raise
            return None

    def _judge(self, frame: FrameFaces, index: int, quality: QualityReport, ref: _Reference, attempt: int,
               static: bool | None, clock: _Clock) -> ScreenOutcome:
        """Every check on one frame whose largest face is the traveller."""
        traveller = frame.faces[0]
        crowd = [face for face in frame.faces[1:] if _side(face) >= self.gate.second_person_ratio * _side(traveller)]
        match = self.matcher.decide(traveller.template, ref.template)
        if match.match:
            # The traveller is the largest face: every other face is someone else's, a non-mated comparison.
            for other in frame.faces[1:]:
                drift.MONITOR.observe(drift.VERIFICATION, self.matcher.decide(other.template, ref.template).score,
                                      match.threshold.value, match.threshold.false_match_rate)
        clock.lap("compare")
        replay_score = None
        if ref.face is not None and ref.face.aligned is not None and traveller.aligned is not None:
            replay_score = self.replay.score(traveller.aligned, ref.face.aligned)
        display_score = None if traveller.aligned is None else self.display.score(traveller.aligned)
        clock.lap("replay")
        pad_score = self._pad(traveller)
        clock.lap("pad")
        hits, searched, threshold = self._search(frame.faces)
        clock.lap("search")
        findings = Findings(
            attempt=attempt, face_found=True, quality_codes=quality.codes, match=match.match,
            watchlist_searched=searched, watchlist_hits=len(hits), replay_checked=replay_score is not None,
            document_photo=replay_score is not None and self.replay.is_replay(replay_score),
            display_pattern=display_score is not None and self.display.is_display(display_score),
            static_picture=bool(static), multiple_people=bool(crowd),
            pad_attack=pad_score is not None and self.gate.pad_threshold is not None
            and pad_score < self.gate.pad_threshold,
        )
        return self._outcome(findings, clock, match=match, hits=hits, searched=searched, threshold=threshold,
                             quality=quality, replay_score=replay_score, display_score=display_score,
                             faces=tuple(frame.faces), index=index, pad_score=pad_score)

    def _pad(self, traveller: FaceResult) -> float | None:
        """The PAD model's live probability for the traveller; None where PAD is off."""
        if not self.pad or self.engine.liveness is None:
            return None
        if traveller.liveness_crop is None:
            raise RuntimeError("the traveller's face has no crop for the PAD model")  # a fault: referred
        return float(self.engine.liveness.live_probability([traveller.liveness_crop])[0])

    def _search(self, faces: list[FaceResult]) -> tuple[tuple[Hit, ...], bool, IdentificationThreshold | None]:
        """Every face against every watch-list; (hits, whether the search was made, its threshold)."""
        if self.watchlist is None or not self.watchlist.availability.serving:
            return (), False, None
        best: dict[tuple[str, str], Hit] = {}
        threshold = None
        try:
            for face_index, face in enumerate(faces):
                deadlines.check("search")
                found = self.watchlist.identify(face.template)
                threshold = found.threshold
                for candidate in found.candidates:
                    entry = candidate.subject.entry
                    key = (entry.watchlist, entry.subject_id)
                    if key not in best or candidate.score > best[key].score:
                        best[key] = Hit(entry.watchlist, entry.subject_id, entry.reason, entry.source_agency,
                                        entry.external_ref, candidate.score, face_index)
        except VerifierError as error:
            if error.kind is Kind.DEADLINE:
                raise
            log.warning("watch-list search failed (%s); the traveller cannot be cleared", error.reason.value)
            return tuple(best.values()), False, threshold
        return tuple(sorted(best.values(), key=lambda hit: -hit.score)), True, threshold

    def _outcome(self, findings: Findings, clock: _Clock, *, match: Decision | None = None, hits: tuple[Hit, ...] = (),
                 searched: bool = False, threshold: IdentificationThreshold | None = None,
                 quality: QualityReport | None = None, replay_score: float | None = None,
                 display_score: float | None = None,
                 faces: tuple[FaceResult, ...] = (), index: int = 0, pad_score: float | None = None) -> ScreenOutcome:
        return ScreenOutcome(
            self.policy.decide(findings), match, hits, searched, threshold, quality, replay_score,
            self.gate.replay_threshold, display_score, self.gate.display_pattern_threshold, pad_score,
            self.gate.pad_threshold, faces, index, dict(clock.ms), self.model_id, self.settings.models.pack,
        )


def _same_track(previous: np.ndarray, box: np.ndarray, reach: float) -> bool:
    """Whether ``box`` continues the track whose last box was ``previous``: its
    centre within ``reach`` of the larger box's side (an approaching face grows
    and drifts between frames; another person appears elsewhere)."""
    distance = float(np.hypot(*((previous[:2] + previous[2:]) / 2 - (box[:2] + box[2:]) / 2)))
    side = max(float(previous[2] - previous[0]), float(box[2] - box[0]))
    return distance <= reach * side


@dataclass(frozen=True)
class StreamStep:
    """What one frame of a stream produced: a hint to show, or the final outcome."""

    frame_index: int
    hint: tuple[str, ...] = ()
    quality: QualityReport | None = None
    outcome: ScreenOutcome | None = None


class StreamSession:
    """One walk-through traveller: tracks the largest face across frames (a
    jump to another place in the frame restarts the track), keeps the
    best-quality frame, and decides as soon as a good frame passes every check
    and the track shows non-rigid motion; REFER for anything an officer must
    see, at once."""

    def __init__(self, service: GateService, reference: _Reference | None) -> None:
        self.service = service
        self.reference = reference
        self.frames = 0
        self.track: list[np.ndarray] = []
        self._last_box: np.ndarray | None = None
        self.best: tuple[float, int, FrameFaces, QualityReport] | None = None
        self.last_outcome: ScreenOutcome | None = None

    def add(self, data: bytes) -> StreamStep:
        index = self.frames
        self.frames += 1
        service = self.service
        clock = _Clock()
        if self.reference is None:
            return StreamStep(index, outcome=service._outcome(Findings(reference_unusable=True), clock))
        try:
            frame = service.engine.analyse_all(data, liveness=service.pad)
        except VerifierError as error:
            if error.reason not in ACQUISITION_FAILURES:
                raise error.with_detail(field=f"frame {index}")
            return StreamStep(index, hint=(MOVE_CLOSER if error.reason is Reason.FACE_TOO_SMALL else NO_FACE,))
        clock.lap("analyse")
        traveller = frame.faces[0]
        if self._last_box is not None and not _same_track(self._last_box, traveller.face.box,
                                                          service.gate.track_reach):
            self.track = []
        self._last_box = traveller.face.box
        self.track.append(traveller.aligned)
        quality = service.quality.assess(traveller)
        clock.lap("quality")
        if self.best is None or quality.unified > self.best[0]:
            self.best = (quality.unified, index, frame, quality)
        if quality.codes:
            return StreamStep(index, hint=quality.codes, quality=quality)
        gate = service.gate
        static = static_picture(self.track, service.replay, gate.static_ncc_threshold, gate.motion_min_frames)
        clock.lap("motion")
        outcome = service._judge(frame, index, quality, self.reference, 1, static, clock)
        self.last_outcome = outcome
        verdict = outcome.verdict
        if verdict.decision is GateDecision.ACCEPT and static is None:
            return StreamStep(index, hint=("HOLD_STILL",), quality=quality)  # not yet enough frames to see motion
        if verdict.decision is GateDecision.REFER and verdict.reasons == ("NO_MATCH",):
            return StreamStep(index, hint=verdict.reasons, quality=quality)  # perhaps a better frame will match
        if verdict.decision is GateDecision.RETRY:
            return StreamStep(index, hint=verdict.reasons, quality=quality)
        return StreamStep(index, outcome=outcome)

    def finish(self, reason: str) -> ScreenOutcome:
        """The decision when the stream ends without one (budget spent, client
        silent or gone): REFER, with what the last judged frame found."""
        clock = _Clock()
        if self.last_outcome is not None:
            reasons = tuple(r for r in self.last_outcome.verdict.reasons if r != reason) + (reason,)
            return _with_verdict(self.last_outcome, Verdict(GateDecision.REFER, reasons))
        if self.best is None:
            outcome = self.service._outcome(Findings(), clock)
            return _with_verdict(outcome, Verdict(GateDecision.REFER, (NO_FACE, reason)))
        _, index, _, quality = self.best
        outcome = self.service._outcome(Findings(), clock, quality=quality, index=index)
        return _with_verdict(outcome, Verdict(GateDecision.REFER, (*quality.codes, reason)))


def _with_verdict(outcome: ScreenOutcome, verdict: Verdict) -> ScreenOutcome:
    return replace(outcome, verdict=verdict)
