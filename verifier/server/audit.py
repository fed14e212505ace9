"""The audit interceptor and the Audit service.

The interceptor records every watch-list change and every decision from the
request and response protobufs (ids, scores, thresholds, model id; never
images or templates) and, on failure, the status and reason the servicer
answered. A change is recorded durably twice: STARTED before the handler
touches the store, so nothing reaches the store off the record, and its
outcome before the response leaves, so nothing is acknowledged off the record.
Decisions are group-committed. When the trail cannot be written the call is
refused (STORE_UNAVAILABLE) instead of answered; while it stays so, audited
calls are refused before they run. Auditors read on meanwhile (what is on
disk).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from verifier.errors import Reason, VerifierError
from verifier.security.audit import CHANGE, DECISION, AuditLog, Entry, Record, RecordFilter, read_records
from verifier.server.errors import REASON_KEY, mapped, status_for
from verifier.server.identity import effective_caller
from verifier.server.request_id import RESPONSE_KEY, request_id_of
from verifier.v1 import audit_pb2, audit_pb2_grpc, gate_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Audited:
    """How one RPC is recorded: its kind, the ids its request names, and what its response decided."""

    kind: str
    targets: Callable[[Any], tuple[str, ...]]
    summary: Callable[[Any, Any], dict[str, Any]] = lambda request, response: {}


def _list_target(request: Any) -> tuple[str, ...]:
    return (request.name,)


def _enrol_summary(request: Any, response: Any) -> dict[str, Any]:
    enrolled = sum(sample.enrolled for sample in response.samples)
    return {"decision": f"enrolled {enrolled} of {len(response.samples)} samples"}


def _match_summary(request: Any, response: Any) -> dict[str, Any]:
    return {"decision": "match" if response.match else "no match", "scores": (response.score,),
            "threshold": response.threshold, "rate": response.false_match_rate, "model_id": response.model_id}


def _identify_summary(request: Any, response: Any) -> dict[str, Any]:
    hits = tuple(f"{c.watchlist}/{c.subject_id}" for c in response.candidates)
    return {"decision": "hit" if hits else "no hit", "targets": (*request.watchlists, *hits),
            "scores": tuple(c.score for c in response.candidates), "threshold": response.threshold,
            "rate": response.false_positive_identification_rate, "model_id": response.model_id}


AUDITED: dict[str, Audited] = {
    "/verifier.v1.Watchlist/CreateWatchlist": Audited(CHANGE, _list_target),
    "/verifier.v1.Watchlist/DeleteWatchlist": Audited(CHANGE, _list_target),
    "/verifier.v1.Watchlist/EnrollSubject": Audited(
        CHANGE, lambda r: (f"{r.subject.watchlist}/{r.subject.subject_id}",), _enrol_summary
    ),
    "/verifier.v1.Watchlist/RemoveSubject": Audited(CHANGE, lambda r: (f"{r.watchlist}/{r.subject_id}",)),
    "/verifier.v1.Replication/Promote": Audited(
        CHANGE, lambda r: (), lambda request, response: {"decision": f"promoted to primary, epoch {response.epoch}"}
    ),
    "/verifier.v1.Bundles/ImportBundle": Audited(
        CHANGE, lambda r: (), lambda request, response: {
            "targets": (response.watchlist,),
            "decision": f"imported bundle {response.bundle_sequence} of {response.issuing_agency}: "
                        f"{response.subjects} subjects",
        }
    ),
    # The registry: traveller ids and scores only; an erasure records that it
    # happened and whose record it was, nothing biometric.
    "/verifier.v1.Registry/Register": Audited(
        CHANGE, lambda r: (f"traveller:{r.traveller_id}", f"gate:{r.consent.gate_id}"),
        lambda request, response: {"decision": f"registered; consent text {request.consent.text_version}",
                                   "scores": (response.score, response.nearest_other_score),
                                   "threshold": response.threshold, "model_id": response.model_id}),
    "/verifier.v1.Registry/UpdateTraveller": Audited(
        CHANGE, lambda r: (f"traveller:{r.traveller_id}",),
        lambda request, response: {"decision": "templates replaced" + ("; new document" if request.document_number
                                                                         else ""), "scores": (response.score,)}),
    "/verifier.v1.Registry/EraseTraveller": Audited(
        CHANGE, lambda r: (f"traveller:{r.traveller_id}",), lambda request, response: {"decision": "erased"}),
    "/verifier.v1.Registry/VerifyTraveller": Audited(
        DECISION, lambda r: (f"traveller:{r.traveller_id}",), _match_summary),
    "/verifier.v1.FaceVerifier/Verify": Audited(DECISION, lambda r: (), _match_summary),
    "/verifier.v1.FaceVerifier/CompareTemplates": Audited(DECISION, lambda r: (), _match_summary),
    "/verifier.v1.Watchlist/Identify": Audited(DECISION, lambda r: tuple(r.watchlists), _identify_summary),
}


def gate_summary(response: Any) -> dict[str, Any]:
    """A gate decision (a ScreenResponse) as an audit record's fields. Scores
    are (1:1 score, replay score, unified quality, each hit's score); the
    threshold and rate are the 1:1 ones, the replay and watch-list thresholds
    are named in the decision text, with the display-grid and PAD scores
    where they were measured."""
    hits = tuple(f"{hit.watchlist}/{hit.subject_id}" for hit in response.hits)
    decision = (f"{gate_pb2.GateDecision.Name(response.decision)}; replay_threshold={response.replay_threshold:.4f}; "
                f"watchlist_threshold={response.watchlist_threshold:.4f}; watchlist_searched="
                f"{response.watchlist_searched}; pack={response.model_pack}")
    if response.display_pattern_checked:
        decision += (f"; display_pattern_score={response.display_pattern_score:.4f}; "
                     f"display_pattern_threshold={response.display_pattern_threshold:.4f}")
    if response.pad_checked:
        decision += f"; pad_score={response.pad_score:.4f}; pad_threshold={response.pad_threshold:.4f}"
    return {"decision": decision, "reason": ",".join(response.reasons),
            "targets": (f"gate:{response.gate_id}", f"transaction:{response.transaction_id}", *hits),
            "scores": (response.score, response.replay_score, response.quality.unified,
                       *(hit.score for hit in response.hits)),
            "threshold": response.threshold, "rate": response.false_match_rate, "model_id": response.model_id}


def record_decision(audit: AuditLog, tls: bool, context: grpc.ServicerContext, method: str,
                    summary: dict[str, Any]) -> None:
    """Record one decision a servicer made itself (a streamed call, or one
    answered once for several retries); raises STORE_UNAVAILABLE when the
    trail cannot take it, so the decision is refused instead of answered."""
    caller = effective_caller(context, tls)
    audit.append_decision(Entry(identity=caller.identity, role=caller.role.value if caller.role else "", rpc=method,
                                kind=DECISION, outcome="OK", request_id=request_id_of(context), **summary))


class AuditInterceptor(grpc.ServerInterceptor):
    """Records the calls named in :data:`AUDITED`; passes every other call through."""

    def __init__(self, audit: AuditLog, tls: bool) -> None:
        self.audit = audit
        self.tls = tls

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        spec = AUDITED.get(handler_call_details.method)
        if handler is None or spec is None or handler.unary_unary is None:
            return handler
        method, inner = handler_call_details.method, handler.unary_unary
        append = self.audit.append_change if spec.kind == CHANGE else self.audit.append_decision

        def audited(request: Any, context: grpc.ServicerContext) -> Any:
            caller = effective_caller(context, self.tls)
            request_id = request_id_of(context)
            context.send_initial_metadata(((RESPONSE_KEY, request_id),))
            base = Entry(identity=caller.identity, role=caller.role.value if caller.role else "", rpc=method,
                         kind=spec.kind, outcome="OK", targets=spec.targets(request), request_id=request_id)
            try:
                if spec.kind == CHANGE:
                    append(replace(base, outcome="STARTED"))
                else:
                    self.audit.require_available()  # no decision computed that could not be recorded
            except VerifierError as error:
                context.abort_with_status(status_for(error))
            try:
                response = inner(request, context)
            except Exception:
                self._record_failure(append, base, context)
                raise
            try:
                append(replace(base, **spec.summary(request, response)))
            except VerifierError as error:
                log.error("%s %s answered but not recorded; refusing the answer", method, request_id)
                context.abort_with_status(status_for(error))
            return response

        return grpc.unary_unary_rpc_method_handler(
            audited, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _record_failure(append: Callable[[Entry], Any], base: Entry, context: grpc.ServicerContext) -> None:
        code = context.code() or grpc.StatusCode.UNKNOWN
        reason = dict(context.trailing_metadata() or ()).get(REASON_KEY, "")
        try:
            append(replace(base, outcome=code.name, reason=str(reason)))
        except VerifierError:
            log.error("%s %s failed and its failure could not be recorded", base.rpc, base.request_id)


def _timestamp(moment: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(moment))
    return stamp


def record_to_pb(record: Record) -> audit_pb2.AuditRecord:
    return audit_pb2.AuditRecord(
        sequence=record.seq, time=_timestamp(record.time), identity=record.identity, role=record.role,
        rpc=record.rpc, kind=record.kind, targets=record.targets, outcome=record.outcome, reason=record.reason,
        decision=record.decision, scores=record.scores, threshold=record.threshold, rate=record.rate,
        model_id=record.model_id, request_id=record.request_id, previous_hash=record.prev_hash, hash=record.hash,
    )


class AuditServicer(audit_pb2_grpc.AuditServicer):
    """Reads the trail for auditors, a page at a time (the page token is the last sequence returned)."""

    def __init__(self, audit: AuditLog, page_size: int) -> None:
        self.audit = audit
        self.page_size = page_size

    @mapped
    def ListRecords(
        self, request: audit_pb2.ListRecordsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListRecordsResponse:
        token = request.page_token or "0"
        if not token.isdigit() or len(token) > 19:
            raise VerifierError(Reason.FIELD_INVALID, "page_token is not one this service returned",
                                field="page_token")
        size = min(request.page_size or self.page_size, self.page_size)
        try:
            self.audit.flush()
        except VerifierError:
            pass  # the trail cannot be written now: what is on disk is read all the same
        where = RecordFilter(
            since=request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None,
            until=request.until.ToDatetime(tzinfo=UTC) if request.HasField("until") else None,
            identity=request.identity, subject=request.subject, outcome=request.outcome,
            after_seq=int(token), limit=size + 1,
        )
        records = list(read_records(self.audit.path, where))
        more = len(records) > size
        page = records[:size]
        return audit_pb2.ListRecordsResponse(
            records=[record_to_pb(r) for r in page], next_page_token=str(page[-1].seq) if more else ""
        )
