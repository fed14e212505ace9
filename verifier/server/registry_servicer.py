"""The Registry servicer: requests to the registry service, results to responses."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from verifier.registry.service import RegistryService
from verifier.registry.store import Traveller
from verifier.security.roles import KIOSK
from verifier.server.convert import face_to_pb, image_bytes, template_to_pb, timings_to_pb
from verifier.server.errors import mapped
from verifier.server.identity import effective_caller
from verifier.v1 import registry_pb2 as rg
from verifier.v1 import registry_pb2_grpc as rg_grpc


def _stamp(epoch: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromtimestamp(epoch, UTC))
    return stamp


def traveller_to_pb(traveller: Traveller, with_templates: bool) -> rg.TravellerRecord:
    return rg.TravellerRecord(
        traveller_id=traveller.traveller_id, registered=_stamp(traveller.registered_at),
        updated=_stamp(traveller.updated_at), last_used=_stamp(traveller.last_used_at),
        consent=rg.Consent(given=_stamp(traveller.consent_at), gate_id=traveller.consent_gate,
                           text_version=traveller.consent_text_version),
        templates=[template_to_pb(t) for t in traveller.templates] if with_templates else [],
    )


class RegistryServicer(rg_grpc.RegistryServicer):
    def __init__(self, service: RegistryService, tls: bool) -> None:
        self.service = service
        self.tls = tls

    @mapped
    def Register(self, request: rg.RegisterRequest, context: grpc.ServicerContext) -> rg.RegisterResponse:
        consent_at = request.consent.given.ToDatetime(UTC).timestamp() if request.consent.HasField("given") else None
        done = self.service.register(
            request.traveller_id, request.document_number, image_bytes(request.chip_photo, "chip_photo"),
            image_bytes(request.live_capture, "live_capture"), request.consent.gate_id,
            request.consent.text_version, consent_at,
        )
        return rg.RegisterResponse(
            traveller=traveller_to_pb(done.traveller, with_templates=False), score=done.match.score,
            threshold=done.match.threshold.value, replay_score=done.replay_score or 0.0,
            quality=done.quality_unified, nearest_other_score=done.nearest_score or -1.0,
            duplicate_threshold=self.service.config.duplicate_threshold, timings=timings_to_pb(done.timings_ms),
            model_id=self.service.model_id,
        )

    @mapped
    def VerifyTraveller(
        self, request: rg.VerifyTravellerRequest, context: grpc.ServicerContext
    ) -> rg.VerifyTravellerResponse:
        checked = self.service.verify(request.traveller_id, image_bytes(request.live_capture, "live_capture"))
        return rg.VerifyTravellerResponse(
            match=checked.match.match, score=checked.match.score, threshold=checked.match.threshold.value,
            false_match_rate=checked.match.threshold.false_match_rate, model_id=self.service.model_id,
            live_face=face_to_pb(checked.live), timings=timings_to_pb(checked.timings_ms),
        )

    @mapped
    def UpdateTraveller(
        self, request: rg.UpdateTravellerRequest, context: grpc.ServicerContext
    ) -> rg.UpdateTravellerResponse:
        done = self.service.update(request.traveller_id, image_bytes(request.chip_photo, "chip_photo"),
                                   image_bytes(request.live_capture, "live_capture"), request.document_number)
        return rg.UpdateTravellerResponse(traveller=traveller_to_pb(done.traveller, with_templates=False),
                                          score=done.match.score)

    @mapped
    def EraseTraveller(
        self, request: rg.EraseTravellerRequest, context: grpc.ServicerContext
    ) -> rg.EraseTravellerResponse:
        return rg.EraseTravellerResponse(traveller_id=self.service.erase(request.traveller_id).traveller_id)

    @mapped
    def GetTraveller(self, request: rg.GetTravellerRequest, context: grpc.ServicerContext) -> rg.GetTravellerResponse:
        caller = effective_caller(context, self.tls)
        found = self.service.traveller(request.traveller_id)
        return rg.GetTravellerResponse(traveller=traveller_to_pb(found, with_templates=caller.role is not KIOSK))
