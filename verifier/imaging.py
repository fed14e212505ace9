"""Decode and validate image bytes from a kiosk or a passport chip.

Checks run cheapest first: byte size, then the header (format and pixel count,
read without decoding, so a small file that claims a huge image is refused
before it can take memory), then the decode itself. Large captures are decoded
at reduced scale where the codec allows it: the face stages never need more
than a working resolution.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from verifier.config import ImagingSettings
from verifier.errors import Reason, VerifierError

# cv2.imdecode flags that make libjpeg decode at 1/2, 1/4, 1/8 scale.
_JPEG_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


@dataclass(frozen=True)
class DecodedImage:
    """A BGR image at working resolution; ``scale`` maps it back to the original."""

    bgr: np.ndarray
    scale: float
    original_width: int
    original_height: int
    format: str

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Coordinates in the working image to coordinates in the image as sent."""
        return points / self.scale


def _header(data: bytes) -> tuple[str, int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as probe:
                return str(probe.format), int(probe.width), int(probe.height)
    except Image.DecompressionBombError as exc:
        raise VerifierError(Reason.IMAGE_TOO_LARGE, "image declares more pixels than allowed") from exc
    except Exception as exc:  # noqa: BLE001 - any header the codec rejects means undecodable
        raise VerifierError(Reason.IMAGE_UNDECODABLE, "image bytes are not a readable image") from exc


def decode(data: bytes, limits: ImagingSettings) -> DecodedImage:
    """Validate ``data`` against ``limits`` and decode it to BGR uint8.

    Greyscale becomes three equal channels and an alpha channel is dropped, so
    every later stage sees one layout.
    """
    if not data:
        raise VerifierError(Reason.IMAGE_EMPTY, "image is empty")
    if len(data) > limits.max_bytes:
        raise VerifierError(
            Reason.IMAGE_TOO_LARGE, f"image is {len(data)} bytes, the limit is {limits.max_bytes}",
            bytes=len(data), limit=limits.max_bytes,
        )
    fmt, width, height = _header(data)
    if fmt not in limits.formats:
        raise VerifierError(
            Reason.IMAGE_FORMAT_UNSUPPORTED, f"{fmt} images are not accepted (accepted: {', '.join(limits.formats)})",
            format=fmt,
        )
    if width * height > limits.max_pixels:
        raise VerifierError(
            Reason.IMAGE_TOO_LARGE, f"image is {width}x{height} pixels, the limit is {limits.max_pixels}",
            pixels=width * height, limit=limits.max_pixels,
        )
    if min(width, height) < limits.min_side:
        raise VerifierError(Reason.IMAGE_TOO_SMALL, f"image is {width}x{height}, smaller than {limits.min_side} pixels a side")

    flag = cv2.IMREAD_COLOR
    if fmt == "JPEG":
        for factor, reduced in _JPEG_REDUCED:
            if max(width, height) // factor >= limits.working_max_side:
                flag = reduced
                break
    buffer = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, flag)
    if bgr is None or bgr.size == 0:
        raise VerifierError(Reason.IMAGE_UNDECODABLE, f"{fmt} data could not be decoded")
    longest = max(bgr.shape[:2])
    if longest > limits.working_max_side:
        factor = limits.working_max_side / longest
        bgr = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return DecodedImage(
        bgr=bgr, scale=bgr.shape[1] / width, original_width=width, original_height=height, format=fmt
    )
