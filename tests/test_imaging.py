"""Decoding and validation of real photos in every accepted form, and refusal of the rest."""

from __future__ import annotations

from pathlib import Path

import io
import struct
import threading
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from verifier.config import ImagingSettings
from verifier.errors import Reason, VerifierError
from verifier.imaging import DecodedImage, ImageDecoder, ImageUse

LIMITS = ImagingSettings()


def decode(data: bytes, limits: ImagingSettings, use: ImageUse = ImageUse.LIVE) -> DecodedImage:
    return ImageDecoder(limits).decode(data, use)


def _reason(data: bytes, limits: ImagingSettings = LIMITS, use: ImageUse = ImageUse.LIVE) -> Reason:
    with pytest.raises(VerifierError) as caught:
        decode(data, limits, use)
    return caught.value.reason


def _reencode(path: Path, ext: str, flags: tuple[int, ...] = (), grey: bool = False) -> bytes:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    ok, buffer = cv2.imencode(ext, image, list(flags))
    assert ok
    return buffer.tobytes()


def test_jpeg_decodes_to_bgr(photos: dict[str, Path]) -> None:
    image = decode(photos["obama.jpg"].read_bytes(), LIMITS)
    assert image.format == "JPEG"
    assert image.bgr.ndim == 3 and image.bgr.shape[2] == 3 and image.bgr.dtype == np.uint8
    assert (image.original_width, image.original_height) == (image.bgr.shape[1], image.bgr.shape[0])


def test_rgba_png_loses_alpha(photos: dict[str, Path]) -> None:
    image = decode(photos["32bit.png"].read_bytes(), LIMITS)
    assert image.format == "PNG" and image.bgr.shape[2] == 3


def test_greyscale_becomes_three_equal_channels(photos: dict[str, Path]) -> None:
    image = decode(_reencode(photos["obama2.jpg"], ".png", grey=True), LIMITS)
    assert image.bgr.shape[2] == 3
    assert np.array_equal(image.bgr[..., 0], image.bgr[..., 2])


def test_jpeg2000_chip_photo_decodes(photos: dict[str, Path]) -> None:
    data = _reencode(photos["obama2.jpg"], ".jp2", (cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 50))
    image = decode(data, LIMITS, ImageUse.DOCUMENT)
    assert image.format == "JPEG2000" and image.bgr.shape[2] == 3
    with pytest.raises(VerifierError) as caught:
        decode(data, LIMITS, ImageUse.LIVE)
    assert caught.value.reason is Reason.IMAGE_FORMAT_UNSUPPORTED


def test_large_jpeg_is_decoded_reduced_and_maps_back(photos: dict[str, Path]) -> None:
    limits = ImagingSettings(working_max_side=600)
    image = decode(photos["obama3.jpg"].read_bytes(), limits)
    assert max(image.bgr.shape[:2]) <= 600
    assert image.scale < 1.0
    corner = image.to_original(np.array([[image.bgr.shape[1], image.bgr.shape[0]]], dtype=np.float32))
    assert corner[0] == pytest.approx([image.original_width, image.original_height], rel=0.01)


def test_empty_bytes_are_refused() -> None:
    assert _reason(b"") is Reason.IMAGE_EMPTY


def test_bytes_that_are_not_an_image_are_refused(photos: dict[str, Path]) -> None:
    assert _reason(b"%PDF-1.7 not a face") is Reason.IMAGE_UNDECODABLE
    truncated = photos["obama.jpg"].read_bytes()[:200]
    assert _reason(truncated) is Reason.IMAGE_UNDECODABLE


def test_oversized_bytes_are_refused(photos: dict[str, Path]) -> None:
    data = photos["obama.jpg"].read_bytes()
    assert _reason(data, _live_limits(max_bytes=len(data) - 1)) is Reason.IMAGE_TOO_LARGE


def test_too_many_pixels_are_refused_before_decoding(photos: dict[str, Path]) -> None:
    assert _reason(photos["obama.jpg"].read_bytes(), _live_limits(max_pixels=100_000)) is Reason.IMAGE_TOO_LARGE


def _live_limits(**limits: int) -> ImagingSettings:
    return ImagingSettings(live=LIMITS.live.model_copy(update=limits))


def test_unaccepted_format_is_refused(photos: dict[str, Path]) -> None:
    assert _reason(_reencode(photos["obama.jpg"], ".bmp")) is Reason.IMAGE_FORMAT_UNSUPPORTED


def test_tiny_image_is_refused(photos: dict[str, Path]) -> None:
    tiny = cv2.resize(cv2.imread(str(photos["obama.jpg"])), (16, 16))
    assert _reason(cv2.imencode(".png", tiny)[1].tobytes()) is Reason.IMAGE_TOO_SMALL


def _pil_bytes(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def test_each_use_has_its_own_limits(photos: dict[str, Path]) -> None:
    frame = cv2.resize(cv2.imread(str(photos["obama3.jpg"])), (1800, 2900))  # 5.2 Mpixel: a camera frame, not a chip photo
    data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
    assert decode(data, LIMITS, ImageUse.LIVE).format == "JPEG"
    assert decode(data, LIMITS, ImageUse.ENROLMENT).format == "JPEG"
    assert _reason(data, LIMITS, ImageUse.DOCUMENT) is Reason.IMAGE_TOO_LARGE


def test_mpo_decodes_its_first_picture(photos: dict[str, Path]) -> None:
    first = Image.open(photos["obama2.jpg"]).convert("RGB")
    second = Image.new("RGB", first.size, (0, 255, 0))
    data = _pil_bytes(first, "MPO", save_all=True, append_images=[second], quality=95)
    image = decode(data, LIMITS)
    assert image.format == "MPO"
    assert float(np.mean(np.abs(image.bgr[..., ::-1].astype(int) - np.asarray(first, dtype=int)))) < 5


def test_webp_decodes(photos: dict[str, Path]) -> None:
    image = decode(_reencode(photos["obama2.jpg"], ".webp"), LIMITS)
    assert image.format == "WEBP" and image.bgr.shape == (1200, 626, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_is_applied_and_sizes_are_upright(photos: dict[str, Path], fmt: str) -> None:
    upright = Image.open(photos["obama2.jpg"]).convert("RGB")  # 626x1200
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to view
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    image = decode(_pil_bytes(stored, fmt, exif=exif), LIMITS)
    assert (image.original_width, image.original_height) == (626, 1200)
    assert image.bgr.shape[:2] == (1200, 626)
    difference = np.abs(image.bgr[..., ::-1].astype(int) - np.asarray(upright, dtype=int))
    assert float(np.mean(difference)) < 8


def test_exif_rotated_large_jpeg_maps_back_in_the_upright_frame(photos: dict[str, Path]) -> None:
    stored = Image.open(photos["obama3.jpg"]).convert("RGB").transpose(Image.Transpose.ROTATE_270)  # 2333x1434
    exif = Image.Exif()
    exif[0x0112] = 8
    image = decode(_pil_bytes(stored, "JPEG", exif=exif), ImagingSettings(working_max_side=600))
    assert (image.original_width, image.original_height) == (1434, 2333)
    corner = image.to_original(np.array([[image.bgr.shape[1], image.bgr.shape[0]]], dtype=np.float32))
    assert corner[0] == pytest.approx([1434, 2333], rel=0.01)


@pytest.mark.parametrize("ext", [".jpg", ".jp2", ".png", ".webp"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_images_are_refused_not_partly_decoded(photos: dict[str, Path], ext: str, keep: float) -> None:
    data = _reencode(photos["obama2.jpg"], ext)
    assert _reason(data[: int(len(data) * keep)], use=ImageUse.ENROLMENT) is Reason.IMAGE_UNDECODABLE


def test_truncated_jpeg2000_without_a_jp2_box_is_refused(photos: dict[str, Path]) -> None:
    photo = Image.open(photos["obama2.jpg"]).convert("RGB")
    codestream = _pil_bytes(photo, "JPEG2000", no_jp2=True, quality_mode="rates", quality_layers=[20])
    assert decode(codestream, LIMITS, ImageUse.DOCUMENT).format == "JPEG2000"
    for cut in (len(codestream) // 3, len(codestream) - 2, len(codestream) - 1):
        assert _reason(codestream[:cut], use=ImageUse.DOCUMENT) is Reason.IMAGE_UNDECODABLE


def test_bit_flipped_png_is_refused(photos: dict[str, Path]) -> None:
    data = bytearray(_reencode(photos["obama2.jpg"], ".png"))
    data[len(data) // 2] ^= 0x10
    assert _reason(bytes(data)) is Reason.IMAGE_UNDECODABLE


def _png_claiming(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR declaring another size, CRC recomputed: a careful liar."""
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + data[33:]


def test_header_claiming_far_more_pixels_than_its_bytes_hold_is_refused(photos: dict[str, Path]) -> None:
    small = cv2.resize(cv2.imread(str(photos["obama2.jpg"])), (64, 120))
    png = cv2.imencode(".png", small)[1].tobytes()
    assert len(png) < 20_000
    liar = _png_claiming(png, 3000, 3000)  # 9 Mpixel, within the live limit, in a few KB
    with pytest.raises(VerifierError) as caught:
        decode(liar, LIMITS)
    assert caught.value.reason is Reason.IMAGE_TOO_LARGE and "pixels a byte" in caught.value.message


def test_a_small_flat_image_is_not_judged_by_its_ratio() -> None:
    card = np.full((900, 1000, 3), 200, np.uint8)  # under the plausibility floor
    data = cv2.imencode(".png", card)[1].tobytes()
    assert 900 * 1000 / len(data) > LIMITS.max_pixels_per_byte["PNG"]
    assert decode(data, LIMITS).bgr.shape == (900, 1000, 3)


def test_jpeg2000_is_capped_in_size_and_resized_to_the_working_side(photos: dict[str, Path]) -> None:
    big = cv2.resize(cv2.imread(str(photos["obama2.jpg"])), (1600, 3064))
    data = cv2.imencode(".jp2", big, [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 50])[1].tobytes()
    assert _reason(data, use=ImageUse.ENROLMENT) is Reason.IMAGE_TOO_LARGE  # 4.9 Mpixel: send a JPEG
    within = cv2.resize(big, (800, 1532))
    data = cv2.imencode(".jp2", within, [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 50])[1].tobytes()
    image = decode(data, ImagingSettings(working_max_side=700), ImageUse.ENROLMENT)
    assert max(image.bgr.shape[:2]) == 700
    assert (image.original_width, image.original_height) == (800, 1532)


def test_heic_is_refused_as_unsupported() -> None:
    heic = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + bytes(64)
    assert _reason(heic) is Reason.IMAGE_FORMAT_UNSUPPORTED


def test_large_decodes_wait_their_turn_then_are_refused_as_overloaded(photos: dict[str, Path]) -> None:
    limits = ImagingSettings(large_decode_pixels=10_000, max_concurrent_large_decodes=1, large_decode_wait_seconds=0.05)
    decoder = ImageDecoder(limits)
    data = photos["obama2.jpg"].read_bytes()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with decoder._turn(10**6):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with pytest.raises(VerifierError) as caught:
            decoder.decode(data, ImageUse.LIVE)
        assert caught.value.reason is Reason.OVERLOADED
    finally:
        release.set()
        holder.join()
    assert decoder.decode(data, ImageUse.LIVE).format == "JPEG"
