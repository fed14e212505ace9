"""The FaceVerifier API through a real channel to the real server on loopback."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from verifier.client import reason_of
from verifier.server.errors import REASON_KEY
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.templates import TemplateSpec


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.FaceVerifierStub:
    return pb_grpc.FaceVerifierStub(channel)


def _image(path: Path) -> pb.Image:
    return pb.Image(data=path.read_bytes())


def _refusal(call, request) -> grpc.RpcError:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def test_verify_match_and_no_match(
    stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path], template_spec: TemplateSpec
) -> None:
    same = stub.Verify(pb.VerifyRequest(probe=_image(photos["obama.jpg"]),
                                        reference=pb.FaceSample(image=_image(photos["obama2.jpg"]))), timeout=30)
    other = stub.Verify(pb.VerifyRequest(probe=_image(photos["obama.jpg"]),
                                         reference=pb.FaceSample(image=_image(photos["biden.jpg"]))), timeout=30)
    assert same.match and not other.match
    assert same.score > same.threshold > other.score
    assert 0 < same.false_match_rate < 0.1 and same.threshold_source
    assert same.model_id == template_spec.model_id
    assert len(same.probe_face.landmarks) == 5 and same.probe_face.faces_detected == 1
    assert same.reference_face.box.x2 > same.reference_face.box.x1
    assert {t.stage for t in same.timings} >= {"probe.detect", "reference.embed", "compare"}


def test_template_once_then_verify_and_compare(
    stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path], template_spec: TemplateSpec
) -> None:
    chip = stub.ExtractTemplate(pb.ExtractTemplateRequest(image=_image(photos["obama2.jpg"])), timeout=30)
    dimension = template_spec.dimension
    assert chip.template.dimension == dimension and len(chip.template.vector) == 4 * dimension
    live = stub.ExtractTemplate(pb.ExtractTemplateRequest(image=_image(photos["obama.jpg"])), timeout=30)
    verified = stub.Verify(pb.VerifyRequest(probe=_image(photos["obama.jpg"]),
                                            reference=pb.FaceSample(template=chip.template)), timeout=30)
    compared = stub.CompareTemplates(pb.CompareTemplatesRequest(a=live.template, b=chip.template), timeout=30)
    assert verified.match and compared.match
    assert compared.score == pytest.approx(verified.score, abs=1e-5)
    assert not verified.HasField("reference_face")


@pytest.mark.parametrize(
    ("probe", "code", "reason"),
    [
        (b"", grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_EMPTY"),
        (b"GIF89a not really", grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_UNDECODABLE"),
        (b"\xff\xd8\xff\xe0 truncated jpeg", grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_UNDECODABLE"),
    ],
)
def test_bad_images_are_invalid_argument_with_a_reason(
    stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path], probe: bytes, code: grpc.StatusCode, reason: str
) -> None:
    error = _refusal(stub.Verify, pb.VerifyRequest(probe=pb.Image(data=probe),
                                                   reference=pb.FaceSample(image=_image(photos["obama.jpg"]))))
    assert error.code() is code
    assert reason_of(error) == reason
    assert (REASON_KEY, reason) in error.trailing_metadata()


def test_no_face_is_failed_precondition(stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path]) -> None:
    import cv2

    photo = cv2.imread(str(photos["obama.jpg"]))
    wall = cv2.imencode(".jpg", photo[:60, :60].copy().repeat(8, 0).repeat(8, 1))[1].tobytes()
    labels = {"method": "ExtractTemplate", "side": "image"}
    before = REGISTRY.get_sample_value("verifier_failure_to_acquire_total", labels) or 0.0
    error = _refusal(stub.ExtractTemplate, pb.ExtractTemplateRequest(image=pb.Image(data=wall)))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "NO_FACE"
    assert REGISTRY.get_sample_value("verifier_failure_to_acquire_total", labels) == before + 1


def test_missing_reference_is_invalid_argument(stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path]) -> None:
    error = _refusal(stub.Verify, pb.VerifyRequest(probe=_image(photos["obama.jpg"])))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "REQUEST_INCOMPLETE"


def test_foreign_and_malformed_templates(stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path]) -> None:
    chip = stub.ExtractTemplate(pb.ExtractTemplateRequest(image=_image(photos["obama2.jpg"])), timeout=30).template
    foreign = pb.Template(model_id="faceplugin-feature-512:84fd65a16b57", version=chip.version,
                          dimension=chip.dimension, vector=chip.vector)
    error = _refusal(stub.CompareTemplates, pb.CompareTemplatesRequest(a=chip, b=foreign))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and reason_of(error) == "TEMPLATE_MODEL_MISMATCH"
    future = pb.Template(model_id=chip.model_id, version=chip.version + 1, dimension=chip.dimension, vector=chip.vector)
    error = _refusal(stub.CompareTemplates, pb.CompareTemplatesRequest(a=chip, b=future))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and reason_of(error) == "TEMPLATE_VERSION_UNSUPPORTED"
    short = pb.Template(model_id=chip.model_id, version=chip.version, dimension=chip.dimension, vector=chip.vector[:40])
    error = _refusal(stub.CompareTemplates, pb.CompareTemplatesRequest(a=short, b=chip))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and reason_of(error) == "TEMPLATE_MALFORMED"


def test_message_over_the_limit_is_refused(stub: pb_grpc.FaceVerifierStub, settings) -> None:  # noqa: ANN001
    huge = pb.ExtractTemplateRequest(image=pb.Image(data=b"\xff" * (settings.server.max_message_bytes + 1)))
    error = _refusal(stub.ExtractTemplate, huge)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_survives_every_refusal(
    stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path], template_spec: TemplateSpec
) -> None:
    for junk in (b"\x00" * 10, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"\xff\xd8" * 500):
        with pytest.raises(grpc.RpcError):
            stub.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=junk)), timeout=30)
    still = stub.ExtractTemplate(pb.ExtractTemplateRequest(image=_image(photos["obama.jpg"])), timeout=30)
    assert still.template.dimension == template_spec.dimension


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "verifier.v1.FaceVerifier"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"verifier.v1.FaceVerifier", "grpc.health.v1.Health"} <= names
