"""The FaceVerifier servicer: requests to the verification service, results to responses."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from verifier.errors import ACQUISITION_FAILURES, VerifierError
from verifier.server import metrics
from verifier.server.convert import (
    face_to_pb,
    image_bytes,
    image_use,
    sample_from_pb,
    template_from_pb,
    template_to_pb,
    timings_to_pb,
)
from verifier.server.errors import mapped
from verifier.server.replication_servicer import timestamp
from verifier.service import VerificationService
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc


def _count_fta(error: VerifierError, method: str) -> None:
    if error.reason in ACQUISITION_FAILURES:
        metrics.FAILURE_TO_ACQUIRE.labels(method, error.details.get("side", "probe")).inc()


class FaceVerifierServicer(pb_grpc.FaceVerifierServicer):
    def __init__(self, service: VerificationService, data_as_of: Callable[[], float] = time.time) -> None:
        self.service = service
        self.data_as_of = data_as_of

    @mapped
    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:
        probe = image_bytes(request.probe, "probe")
        reference = sample_from_pb(request.reference, "reference")
        try:
            outcome = self.service.verify(probe, reference)
        except VerifierError as error:
            _count_fta(error, "Verify")
            raise
        decision = outcome.decision
        response = pb.VerifyResponse(
            score=decision.score,
            match=decision.match,
            threshold=decision.threshold.value,
            false_match_rate=decision.threshold.false_match_rate,
            threshold_source=decision.threshold.source,
            probe_face=face_to_pb(outcome.probe),
            timings=timings_to_pb(outcome.timings_ms),
            model_id=outcome.model_id,
            data_as_of=timestamp(self.data_as_of()),
        )
        if outcome.reference is not None:
            response.reference_face.CopyFrom(face_to_pb(outcome.reference))
        return response

    @mapped
    def ExtractTemplate(
        self, request: pb.ExtractTemplateRequest, context: grpc.ServicerContext
    ) -> pb.ExtractTemplateResponse:
        try:
            result = self.service.extract(image_bytes(request.image, "image"), image_use(request.kind))
        except VerifierError as error:
            _count_fta(error.with_detail(side="image"), "ExtractTemplate")
            raise
        return pb.ExtractTemplateResponse(
            template=template_to_pb(result.template), face=face_to_pb(result), timings=timings_to_pb(result.timings_ms)
        )

    @mapped
    def CompareTemplates(
        self, request: pb.CompareTemplatesRequest, context: grpc.ServicerContext
    ) -> pb.CompareTemplatesResponse:
        decision = self.service.compare(template_from_pb(request.a, "a"), template_from_pb(request.b, "b"))
        return pb.CompareTemplatesResponse(
            score=decision.score,
            match=decision.match,
            threshold=decision.threshold.value,
            false_match_rate=decision.threshold.false_match_rate,
            model_id=self.service.model_id,
            threshold_source=decision.threshold.source,
        )
