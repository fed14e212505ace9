"""The Gate servicer: Screen and ScreenStream requests to the gate service, outcomes to responses.

Two things live here because they are about calls, not about travellers: a
retried transaction id gets its stored answer back (and no second audit
record), and a stream is bounded in frames, bytes, time and silence.

A decision that cannot be recorded (the audit trail or the answer store
failing: disk full, I/O error, read-only) is never given: the traveller is
referred (REFER ``STORAGE_FAULT``, never INTERNAL), at once and without the
checks while either is known to be failing; such a referral is not kept for
retries.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import grpc

from verifier import deadlines
from verifier.config import GateSettings
from verifier.errors import Reason, VerifierError
from verifier.face.quality import QualityReport
from verifier.gate.policy import (
    CAPTURE_ENDED,
    FRAME_BUDGET_EXHAUSTED,
    FRAME_TIMEOUT,
    INTERNAL_FAULT,
    STORAGE_FAULT,
    TIME_BUDGET_EXHAUSTED,
)
from verifier.gate.service import GateService, ScreenOutcome
from verifier.gate.transactions import AnswerStoreFault, TransactionStore, digest
from verifier.security.audit import AuditLog
from verifier.server.audit import gate_summary, record_decision
from verifier.server.convert import face_to_pb, image_bytes, sample_from_pb, timings_to_pb
from verifier.server.errors import mapped, status_for
from verifier.templates import Template
from verifier.v1 import gate_pb2 as pb
from verifier.v1 import gate_pb2_grpc as pb_grpc
from verifier.validation import identifier

log = logging.getLogger(__name__)

SCREEN = "/verifier.v1.Gate/Screen"
SCREEN_STREAM = "/verifier.v1.Gate/ScreenStream"
_END = object()


def quality_to_pb(report: QualityReport | None) -> pb.QualityReport:
    if report is None:
        return pb.QualityReport()
    return pb.QualityReport(
        unified=report.unified, utility_calibrated=report.utility is not None, utility=report.utility or 0.0,
        components=[pb.QualityComponent(name=c.name, score=c.score, raw=c.raw, unit=c.unit, code=c.code)
                    for c in report.components],
    )


def outcome_to_pb(outcome: ScreenOutcome, gate_id: str, transaction_id: str) -> pb.ScreenResponse:
    response = pb.ScreenResponse(
        decision=pb.GateDecision.Value(outcome.verdict.decision.value), reasons=outcome.verdict.reasons,
        watchlist_searched=outcome.watchlist_searched, quality=quality_to_pb(outcome.quality),
        replay_checked=outcome.replay_score is not None, replay_score=outcome.replay_score or 0.0,
        replay_threshold=outcome.replay_threshold, display_pattern_checked=outcome.display_pattern_score is not None,
        display_pattern_score=outcome.display_pattern_score or 0.0,
        display_pattern_threshold=outcome.display_pattern_threshold,
        faces=[face_to_pb(face) for face in outcome.faces],
        frame_index=outcome.frame_index, timings=timings_to_pb(outcome.timings_ms), model_id=outcome.model_id,
        model_pack=outcome.model_pack, gate_id=gate_id, transaction_id=transaction_id,
        hits=[pb.WatchlistHit(watchlist=h.watchlist, subject_id=h.subject_id, reason=h.reason,
                              source_agency=h.source_agency, external_reference=h.external_ref, score=h.score,
                              face_index=h.face_index) for h in outcome.hits],
    )
    if outcome.match is not None:
        threshold = outcome.match.threshold
        response.score, response.match = outcome.match.score, outcome.match.match
        response.threshold, response.false_match_rate = threshold.value, threshold.false_match_rate
        response.threshold_source = threshold.source
    if outcome.pad_score is not None:
        response.pad_checked, response.pad_score = True, outcome.pad_score
        response.pad_threshold = outcome.pad_threshold or 0.0
    if outcome.watchlist_threshold is not None:
        response.watchlist_threshold = outcome.watchlist_threshold.value
        response.false_positive_identification_rate = outcome.watchlist_threshold.fpir
    return response


def _reference_bytes(reference: bytes | Template) -> bytes:
    return reference if isinstance(reference, bytes) else reference.model_id.encode() + reference.to_bytes()


def _remaining_s(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e8 else remaining


class GateServicer(pb_grpc.GateServicer):
    def __init__(self, gate: GateService, transactions: TransactionStore, audit: AuditLog | None, tls: bool) -> None:
        self.gate = gate
        self.settings: GateSettings = gate.gate
        self.transactions = transactions
        self.audit = audit
        self.tls = tls
        self._streams = threading.BoundedSemaphore(self.settings.max_streams)

    def _record(self, context: grpc.ServicerContext, method: str, response: pb.ScreenResponse) -> None:
        if self.audit is not None:
            record_decision(self.audit, self.tls, context, method, gate_summary(response))

    @property
    def recording(self) -> bool:
        """Whether a decision can be recorded now (audit trail and answer store both available)."""
        return (self.audit is None or self.audit.available) and self.transactions.available

    def _answer(self, context: grpc.ServicerContext, method: str, response: pb.ScreenResponse, key: str
                ) -> pb.ScreenResponse:
        """Record ``response`` and keep it for retries; a referral instead when either fails."""
        try:
            self._record(context, method, response)
        except VerifierError as error:
            if error.reason is not Reason.STORE_UNAVAILABLE:
                raise
            return self._referral(context, method, response.gate_id, response.transaction_id, response)
        try:
            self.transactions.store(response.gate_id, response.transaction_id, key, response.SerializeToString())
        except AnswerStoreFault:
            return self._referral(context, method, response.gate_id, response.transaction_id, response)
        return response

    def _referral(self, context: grpc.ServicerContext, method: str, gate_id: str, transaction_id: str,
                  decided: pb.ScreenResponse | None = None) -> pb.ScreenResponse:
        """REFER ``STORAGE_FAULT``: what the checks found (if they ran) stays in the
        answer for the officer; recorded where the trail still takes it, never kept."""
        referral = pb.ScreenResponse(gate_id=gate_id, transaction_id=transaction_id,
                                     model_id=self.gate.model_id, model_pack=self.gate.settings.models.pack)
        if decided is not None:
            referral.CopyFrom(decided)
        found = [reason for reason in referral.reasons if reason != STORAGE_FAULT]
        referral.decision = pb.GateDecision.REFER
        del referral.reasons[:]
        referral.reasons.extend([STORAGE_FAULT, *found])
        log.error("%s %s/%s referred: the decision cannot be recorded (%s)", method, gate_id, transaction_id,
                  "audit trail" if self.audit is not None and not self.audit.available else "answer store")
        try:
            self._record(context, method, referral)
        except VerifierError:
            pass  # the trail is down: the referral goes off the record, and the outage is recorded when it ends
        return referral

    @mapped
    def Screen(self, request: pb.ScreenRequest, context: grpc.ServicerContext) -> pb.ScreenResponse:
        gate_id = identifier(request.gate_id, "gate_id")
        transaction_id = identifier(request.transaction_id, "transaction_id")
        frames = [image_bytes(frame, f"frames[{i}]") for i, frame in enumerate(request.frames)]
        reference = sample_from_pb(request.reference, "reference")
        attempt = request.attempt or 1
        key = digest(*frames, _reference_bytes(reference), str(attempt).encode())
        if not self.recording:
            return self._referral(context, SCREEN, gate_id, transaction_id)
        try:
            with self.transactions.claim(gate_id, transaction_id, key) as stored:
                if stored is not None:
                    response = pb.ScreenResponse.FromString(stored)
                    response.repeated_answer = True
                    return response
                response = outcome_to_pb(self.gate.screen(frames, reference, attempt), gate_id, transaction_id)
                return self._answer(context, SCREEN, response, key)
        except AnswerStoreFault:
            return self._referral(context, SCREEN, gate_id, transaction_id)

    def ScreenStream(self, request_iterator: Iterator[pb.ScreenStreamRequest],
                     context: grpc.ServicerContext) -> Iterator[pb.ScreenStreamResponse]:
        if not self._streams.acquire(blocking=False):
            context.abort_with_status(status_for(VerifierError(
                Reason.OVERLOADED, "every walk-through stream slot is taken; retry later",
                bound="streams", limit=self.settings.max_streams)))
        try:
            with deadlines.deadline_after(_remaining_s(context)):
                yield from self._stream(request_iterator, context)
        except VerifierError as error:
            context.abort_with_status(status_for(error))
        finally:
            self._streams.release()

    def _stream(self, request_iterator: Iterator[pb.ScreenStreamRequest],
                context: grpc.ServicerContext) -> Iterator[pb.ScreenStreamResponse]:
        limits = self.settings
        inbox: queue.Queue[object] = queue.Queue(maxsize=4)
        stop = threading.Event()
        threading.Thread(target=_read_into, args=(request_iterator, inbox, stop), name="stream-reader",
                         daemon=True).start()
        try:
            yield from self._decide(inbox, context)
        finally:
            stop.set()

    def _decide(self, inbox: "queue.Queue[object]", context: grpc.ServicerContext) -> Iterator[pb.ScreenStreamResponse]:
        limits = self.settings
        started = time.monotonic()
        first = _next(inbox, limits.frame_timeout_seconds)
        if not isinstance(first, pb.ScreenStreamRequest) or first.WhichOneof("item") != "start":
            raise VerifierError(Reason.REQUEST_INCOMPLETE, "a stream starts with ScreenStart", field="start")
        start = first.start
        gate_id = identifier(start.gate_id, "start.gate_id")
        transaction_id = identifier(start.transaction_id, "start.transaction_id")
        reference = sample_from_pb(start.reference, "start.reference")
        key = digest(b"stream", _reference_bytes(reference))
        if not self.recording:
            yield pb.ScreenStreamResponse(decision=self._referral(context, SCREEN_STREAM, gate_id, transaction_id))
            return
        try:
            yield from self._stream_claimed(inbox, context, started, gate_id, transaction_id, reference, key)
        except AnswerStoreFault:
            yield pb.ScreenStreamResponse(decision=self._referral(context, SCREEN_STREAM, gate_id, transaction_id))

    def _stream_claimed(self, inbox: "queue.Queue[object]", context: grpc.ServicerContext, started: float,
                        gate_id: str, transaction_id: str, reference: bytes | Template, key: str
                        ) -> Iterator[pb.ScreenStreamResponse]:
        limits = self.settings
        with self.transactions.claim(gate_id, transaction_id, key) as stored:
            if stored is not None:
                response = pb.ScreenResponse.FromString(stored)
                response.repeated_answer = True
                yield pb.ScreenStreamResponse(decision=response)
                return
            session = self.gate.open_stream(reference)
            outcome = None
            received = 0
            while outcome is None:
                left = limits.max_stream_seconds - (time.monotonic() - started)
                if left <= 0:
                    outcome = session.finish(TIME_BUDGET_EXHAUSTED)
                    break
                item = _next(inbox, min(limits.frame_timeout_seconds, left))
                if item is None:
                    outcome = session.finish(FRAME_TIMEOUT if left > limits.frame_timeout_seconds
                                             else TIME_BUDGET_EXHAUSTED)
                elif item is _END:
                    outcome = session.finish(CAPTURE_ENDED)
                elif isinstance(item, Exception):
                    raise item
                else:
                    frame = item.frame if item.WhichOneof("item") == "frame" else None
                    if frame is None:
                        raise VerifierError(Reason.FIELD_INVALID, "only frames may follow ScreenStart", field="frame")
                    received += len(frame.data)
                    if session.frames >= limits.max_stream_frames or received > limits.max_stream_bytes:
                        outcome = session.finish(FRAME_BUDGET_EXHAUSTED)
                        break
                    data = image_bytes(frame, f"frame {session.frames}")
                    try:
                        step = session.add(data)
                    except VerifierError:
                        raise
                    except Exception:  # noqa: BLE001 - a fault is a referral, never an accept
                        log.exception("stream frame failed; referring the traveller")
                        outcome = session.finish(INTERNAL_FAULT)
                        break
                    if step.outcome is not None:
                        outcome = step.outcome
                    else:
                        yield pb.ScreenStreamResponse(hint=pb.ScreenHint(
                            frame_index=step.frame_index, reasons=step.hint, quality=quality_to_pb(step.quality)))
            response = self._answer(context, SCREEN_STREAM, outcome_to_pb(outcome, gate_id, transaction_id), key)
        yield pb.ScreenStreamResponse(decision=response)


def _read_into(requests: Iterator[pb.ScreenStreamRequest], inbox: "queue.Queue[object]",
               stop: threading.Event) -> None:
    """Hand the client's messages to the stream's loop, which can then time a
    silent client out; gives up once the loop has stopped listening."""
    try:
        for request in requests:
            if not _put(inbox, request, stop):
                return
        _put(inbox, _END, stop)
    except Exception as error:  # noqa: BLE001 - the client went away or sent garbage: the loop decides
        _put(inbox, error, stop)


def _put(inbox: "queue.Queue[object]", item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            inbox.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _next(inbox: "queue.Queue[object]", timeout: float) -> object | None:
    try:
        return inbox.get(timeout=timeout)
    except queue.Empty:
        return None
