"""The Watchlist servicer: requests to the watch-list service, results to responses."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from verifier.errors import ACQUISITION_FAILURES, VerifierError
from verifier.server import metrics
from verifier.server.convert import (
    entry_from_pb,
    face_to_pb,
    provenance_to_pb,
    sample_from_pb,
    subject_to_pb,
    timings_to_pb,
    watchlist_to_pb,
)
from verifier.server.errors import mapped
from verifier.server.replication_servicer import timestamp
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.service import WatchlistService


class WatchlistServicer(wl_grpc.WatchlistServicer):
    def __init__(self, service: WatchlistService, data_as_of: Callable[[], float] = time.time) -> None:
        self.service = service
        self.data_as_of = data_as_of

    @mapped
    def CreateWatchlist(
        self, request: wl.CreateWatchlistRequest, context: grpc.ServicerContext
    ) -> wl.CreateWatchlistResponse:
        created = self.service.create_watchlist(request.name, request.description)
        return wl.CreateWatchlistResponse(watchlist=watchlist_to_pb(created))

    @mapped
    def DeleteWatchlist(
        self, request: wl.DeleteWatchlistRequest, context: grpc.ServicerContext
    ) -> wl.DeleteWatchlistResponse:
        deleted = self.service.delete_watchlist(request.name, request.force)
        return wl.DeleteWatchlistResponse(watchlist=watchlist_to_pb(deleted))

    @mapped
    def ListWatchlists(
        self, request: wl.ListWatchlistsRequest, context: grpc.ServicerContext
    ) -> wl.ListWatchlistsResponse:
        page, next_token = self.service.watchlists_page(request.page_size, request.page_token)
        return wl.ListWatchlistsResponse(watchlists=[watchlist_to_pb(w) for w in page], next_page_token=next_token)

    @mapped
    def EnrollSubject(
        self, request: wl.EnrollSubjectRequest, context: grpc.ServicerContext
    ) -> wl.EnrollSubjectResponse:
        samples = [sample_from_pb(sample, f"samples[{i}]") for i, sample in enumerate(request.samples)]
        enrolment = self.service.enrol(entry_from_pb(request.subject), samples, request.allow_partial)
        return wl.EnrollSubjectResponse(
            subject=subject_to_pb(enrolment.subject),
            samples=[
                wl.SampleResult(
                    index=outcome.index,
                    enrolled=outcome.error is None,
                    reason=outcome.error.reason.value if outcome.error is not None else "",
                    face=face_to_pb(outcome.face) if outcome.face is not None else None,
                )
                for outcome in enrolment.samples
            ],
            timings=timings_to_pb(enrolment.timings_ms),
        )

    @mapped
    def RemoveSubject(
        self, request: wl.RemoveSubjectRequest, context: grpc.ServicerContext
    ) -> wl.RemoveSubjectResponse:
        removed = self.service.remove(request.watchlist, request.subject_id)
        return wl.RemoveSubjectResponse(subject=subject_to_pb(removed))

    @mapped
    def GetSubject(self, request: wl.GetSubjectRequest, context: grpc.ServicerContext) -> wl.GetSubjectResponse:
        return wl.GetSubjectResponse(subject=subject_to_pb(self.service.subject(request.watchlist, request.subject_id)))

    @mapped
    def Identify(self, request: wl.IdentifyRequest, context: grpc.ServicerContext) -> wl.IdentifyResponse:
        probe = sample_from_pb(request.probe, "probe")
        try:
            found = self.service.identify(probe, list(request.watchlists), request.top_k or None)
        except VerifierError as error:
            if error.reason in ACQUISITION_FAILURES:
                metrics.FAILURE_TO_ACQUIRE.labels("Identify", "probe").inc()
            raise
        response = wl.IdentifyResponse(
            candidates=[
                wl.Candidate(
                    rank=c.rank, subject_id=c.subject.entry.subject_id, watchlist=c.subject.entry.watchlist,
                    reason=c.subject.entry.reason, source_agency=c.subject.entry.source_agency,
                    external_reference=c.subject.entry.external_ref, score=c.score,
                    provenance=provenance_to_pb(found.provenance.get(c.subject.entry.watchlist)),
                )
                for c in found.candidates
            ],
            threshold=found.threshold.value,
            false_positive_identification_rate=found.threshold.fpir,
            threshold_source=found.threshold.source,
            timings=timings_to_pb(found.timings_ms),
            model_id=found.model_id,
            gallery_size=found.searched,
            data_as_of=timestamp(self.data_as_of()),
        )
        if found.probe is not None:
            response.probe_face.CopyFrom(face_to_pb(found.probe))
        return response
