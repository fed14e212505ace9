"""Decoding and validation of real photos in every accepted form, and refusal of the rest."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from verifier.config import ImagingSettings
from verifier.errors import Reason, VerifierError
from verifier.imaging import decode

LIMITS = ImagingSettings()


def _reason(data: bytes, limits: ImagingSettings = LIMITS) -> Reason:
    with pytest.raises(VerifierError) as caught:
        decode(data, limits)
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
    image = decode(data, LIMITS)
    assert image.format == "JPEG2000" and image.bgr.shape[2] == 3


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
    assert _reason(data, ImagingSettings(max_bytes=len(data) - 1)) is Reason.IMAGE_TOO_LARGE


def test_too_many_pixels_are_refused_before_decoding(photos: dict[str, Path]) -> None:
    assert _reason(photos["obama.jpg"].read_bytes(), ImagingSettings(max_pixels=100_000)) is Reason.IMAGE_TOO_LARGE


def test_unaccepted_format_is_refused(photos: dict[str, Path]) -> None:
    assert _reason(_reencode(photos["obama.jpg"], ".bmp")) is Reason.IMAGE_FORMAT_UNSUPPORTED


def test_tiny_image_is_refused(photos: dict[str, Path]) -> None:
    tiny = cv2.resize(cv2.imread(str(photos["obama.jpg"])), (16, 16))
    assert _reason(cv2.imencode(".png", tiny)[1].tobytes()) is Reason.IMAGE_TOO_SMALL
