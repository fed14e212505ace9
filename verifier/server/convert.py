"""Protobuf messages to domain values and back; nothing else in the transport touches fields."""

from __future__ import annotations

from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceResult
from verifier.templates import Template
from verifier.v1 import verifier_pb2 as pb


def template_from_pb(message: pb.Template, field: str) -> Template:
    try:
        return Template.from_parts(message.model_id, message.version, message.dimension, message.vector)
    except VerifierError as error:
        raise error.with_detail(field=field)


def template_to_pb(template: Template) -> pb.Template:
    return pb.Template(
        model_id=template.model_id, version=template.version, dimension=template.dimension, vector=template.to_bytes()
    )


def image_bytes(message: pb.Image, field: str) -> bytes:
    if not message.data:
        raise VerifierError(Reason.IMAGE_EMPTY, f"{field} has no image bytes", field=field)
    return message.data


def face_to_pb(result: FaceResult) -> pb.Face:
    box = result.face.box
    return pb.Face(
        box=pb.Box(x1=float(box[0]), y1=float(box[1]), x2=float(box[2]), y2=float(box[3])),
        detection_score=result.face.detection_score,
        landmarks=[pb.Point(x=float(x), y=float(y)) for x, y in result.face.landmarks],
        faces_detected=result.faces_detected,
    )


def timings_to_pb(timings_ms: dict[str, float]) -> list[pb.StageTiming]:
    return [pb.StageTiming(stage=stage, milliseconds=ms) for stage, ms in timings_ms.items()]
