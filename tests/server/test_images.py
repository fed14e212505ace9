"""Image forms a kiosk or a chip really sends, over a real socket: MPO, WEBP,
EXIF-rotated captures (faces reported in the upright frame), truncated JPEG 2000,
and HEIC (refused by name)."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from verifier.client import reason_of
from verifier.templates import TemplateSpec
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.FaceVerifierStub:
    return pb_grpc.FaceVerifierStub(channel)


@pytest.fixture
def dimension(template_spec: TemplateSpec) -> int:
    """The served pack's template dimension."""
    return template_spec.dimension


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _extract(
    stub: pb_grpc.FaceVerifierStub, data: bytes, kind: int = pb.IMAGE_KIND_LIVE
) -> pb.ExtractTemplateResponse:
    return stub.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=data), kind=kind), timeout=30)


def _box(face: pb.Face) -> np.ndarray:
    return np.array([face.box.x1, face.box.y1, face.box.x2, face.box.y2])


def _refusal(
    stub: pb_grpc.FaceVerifierStub, data: bytes, kind: int = pb.IMAGE_KIND_LIVE
) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        _extract(stub, data, kind)
    return caught.value.code(), reason_of(caught.value)


def test_mpo_from_a_camera_is_accepted(
    stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path], dimension: int
) -> None:
    first = Image.open(photos["obama2.jpg"]).convert("RGB")
    data = _encode(first, "MPO", save_all=True, append_images=[first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    plain = _extract(stub, _encode(first, "JPEG"))
    mpo = _extract(stub, data)
    assert mpo.template.dimension == dimension
    assert np.allclose(_box(mpo.face), _box(plain.face), atol=6)


def test_webp_is_accepted(stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path]) -> None:
    data = _encode(Image.open(photos["obama2.jpg"]).convert("RGB"), "WEBP", quality=85)
    assert _extract(stub, data).face.faces_detected >= 1


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_capture_reports_the_face_in_the_upright_frame(
    stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path], orientation: int
) -> None:
    upright = Image.open(photos["obama2.jpg"]).convert("RGB")  # 626x1200
    stored = upright.transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                                8: Image.Transpose.ROTATE_270}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    expected = _extract(stub, _encode(upright, "JPEG", quality=95)).face
    rotated = _extract(stub, _encode(stored, "JPEG", quality=95, exif=exif)).face
    assert np.allclose(_box(rotated), _box(expected), atol=6)
    landmarks = np.array([[p.x, p.y] for p in rotated.landmarks])
    assert np.allclose(landmarks, [[p.x, p.y] for p in expected.landmarks], atol=6)
    assert landmarks[0, 0] < landmarks[1, 0] and landmarks[2, 1] < landmarks[3, 1]  # eyes above mouth, upright


@pytest.mark.parametrize("keep", [0.3, 0.8, 0.995])
def test_truncated_jpeg2000_chip_photo_is_refused(
    stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path], keep: float, dimension: int
) -> None:
    chip = Image.open(photos["obama2.jpg"]).convert("RGB").resize((480, 640))
    data = _encode(chip, "JPEG2000", quality_mode="rates", quality_layers=[40])
    assert _extract(stub, data, pb.IMAGE_KIND_DOCUMENT).template.dimension == dimension
    assert _refusal(stub, data[: int(len(data) * keep)], pb.IMAGE_KIND_DOCUMENT) == (
        grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_UNDECODABLE"
    )


def test_jpeg2000_is_a_document_format_not_a_live_one(
    stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path], dimension: int
) -> None:
    chip = Image.open(photos["obama2.jpg"]).convert("RGB").resize((480, 640))
    data = _encode(chip, "JPEG2000", quality_mode="rates", quality_layers=[40])
    assert _refusal(stub, data) == (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_FORMAT_UNSUPPORTED")
    assert _extract(stub, data, pb.IMAGE_KIND_DOCUMENT).template.dimension == dimension
    verified = stub.Verify(pb.VerifyRequest(probe=pb.Image(data=photos["obama.jpg"].read_bytes()),
                                            reference=pb.FaceSample(image=pb.Image(data=data))), timeout=30)
    assert verified.match


def test_heic_is_refused_by_name(stub: pb_grpc.FaceVerifierStub) -> None:
    heic = (24).to_bytes(4, "big") + b"ftypheic" + bytes(4) + b"mif1heic" + bytes(256)
    assert _refusal(stub, heic) == (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_FORMAT_UNSUPPORTED")


def test_a_camera_frame_is_refused_as_a_chip_photo(stub: pb_grpc.FaceVerifierStub, photos: dict[str, Path]) -> None:
    frame = _encode(Image.open(photos["obama3.jpg"]).convert("RGB").resize((1900, 2600)), "JPEG", quality=80)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Verify(pb.VerifyRequest(probe=pb.Image(data=photos["obama.jpg"].read_bytes()),
                                     reference=pb.FaceSample(image=pb.Image(data=frame))), timeout=30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and reason_of(caught.value) == "IMAGE_TOO_LARGE"
