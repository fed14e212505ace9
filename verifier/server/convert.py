"""Protobuf messages to domain values and back; nothing else in the transport touches fields."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from verifier.errors import Reason, VerifierError
from verifier.imaging import ImageUse
from verifier.pipeline import FaceResult
from verifier.templates import Template
from verifier.validation import utc_moment
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import watchlist_pb2 as wl
from verifier.watchlist.store import Provenance, Subject, SubjectEntry, Watchlist


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


_IMAGE_USES = {pb.IMAGE_KIND_LIVE: ImageUse.LIVE, pb.IMAGE_KIND_DOCUMENT: ImageUse.DOCUMENT}


def image_use(kind: int) -> ImageUse:
    """The image use an ImageKind names; an unknown value is refused, not guessed."""
    if kind not in _IMAGE_USES:
        raise VerifierError(Reason.FIELD_INVALID, f"kind: unknown image kind {kind}", field="kind")
    return _IMAGE_USES[kind]


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


def sample_from_pb(message: pb.FaceSample, field: str) -> bytes | Template:
    """An image's bytes or a template, from a FaceSample."""
    which = message.WhichOneof("sample")
    if which == "image":
        return image_bytes(message.image, field)
    if which == "template":
        return template_from_pb(message.template, f"{field}.template")
    raise VerifierError(Reason.REQUEST_INCOMPLETE, f"{field} must be an image or a template", field=field)


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def watchlist_to_pb(watchlist: Watchlist) -> wl.WatchlistInfo:
    return wl.WatchlistInfo(
        name=watchlist.name, description=watchlist.description, created=_timestamp(watchlist.created_at),
        subject_count=watchlist.subjects, template_count=watchlist.templates,
    )


def entry_from_pb(message: wl.Subject) -> SubjectEntry:
    return SubjectEntry(
        watchlist=message.watchlist, subject_id=message.subject_id, reason=message.reason,
        source_agency=message.source_agency, external_ref=message.external_reference,
        expires_at=(
            utc_moment(message.expires.seconds, message.expires.nanos, "subject.expires")
            if message.HasField("expires") else None
        ),
    )


def subject_to_pb(subject: Subject) -> wl.Subject:
    entry = subject.entry
    message = wl.Subject(
        watchlist=entry.watchlist, subject_id=entry.subject_id, external_reference=entry.external_ref,
        reason=entry.reason, source_agency=entry.source_agency, created=_timestamp(subject.created_at),
        template_count=subject.template_count, model_ids=subject.model_ids,
    )
    if entry.expires_at is not None:
        message.expires.CopyFrom(_timestamp(entry.expires_at))
    return message


def provenance_to_pb(provenance: Provenance | None) -> wl.Provenance | None:
    """A partner list's provenance for a hit on it; None for a local list."""
    if provenance is None:
        return None
    return wl.Provenance(
        issuing_agency=provenance.issuer, key_id=provenance.key_id, bundle_sequence=provenance.sequence,
        created=_timestamp(provenance.created_at), expires=_timestamp(provenance.expires_at),
        model_id=provenance.model_id,
    )
