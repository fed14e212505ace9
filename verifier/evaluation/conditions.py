"""Harder capture conditions derived from a labeled set, to check that the served
threshold still means what it says when the images are worse than the ones it
was calibrated on.

Each condition is a deterministic rewrite of an image's bytes. Only the named
degradation is applied: the result is stored losslessly (PNG) unless the
condition is itself a compression. Conditions that depend on the face's size
read the set's published five-point landmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from verifier.imaging import ImageUse

# A passport chip's face image: 413x531 pixels in 10-20 KB; JPEG 2000 conditions
# keep its bits per pixel, so a smaller image gets proportionally fewer bytes.
CHIP_PIXELS = 413 * 531
CHIP_BYTES = 15_000


class ConditionError(Exception):
    """A condition that cannot be applied to this set or image."""


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ConditionError("image does not decode")
    return image


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ConditionError("PNG encoding failed")
    return encoded.tobytes()


def _downscale(target_eye_px: float) -> Callable[[bytes, np.ndarray | None], bytes]:
    def apply(data: bytes, points: np.ndarray | None) -> bytes:
        if points is None:
            raise ConditionError("downscaling to an inter-eye distance needs the set's published landmarks")
        image = _decode(data)
        eyes = float(np.linalg.norm(points[0] - points[1]))
        factor = min(1.0, target_eye_px / max(eyes, 1e-6))
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        return _png(cv2.resize(image, size, interpolation=cv2.INTER_AREA))

    return apply


def _greyscale(data: bytes, points: np.ndarray | None) -> bytes:
    return _png(cv2.cvtColor(_decode(data), cv2.COLOR_BGR2GRAY))


def _blur(sigma: float) -> Callable[[bytes, np.ndarray | None], bytes]:
    def apply(data: bytes, points: np.ndarray | None) -> bytes:
        return _png(cv2.GaussianBlur(_decode(data), (0, 0), sigma))

    return apply


def _jpeg(quality: int) -> Callable[[bytes, np.ndarray | None], bytes]:
    def apply(data: bytes, points: np.ndarray | None) -> bytes:
        ok, encoded = cv2.imencode(".jpg", _decode(data), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ConditionError("JPEG encoding failed")
        return encoded.tobytes()

    return apply


def _jpeg2000_chip(data: bytes, points: np.ndarray | None) -> bytes:
    """The largest JPEG 2000 encoding within the chip's bits per pixel.

    OpenCV's rate is the output's share of the raw pixel bytes in thousandths,
    so the first guess nearly always fits; the rate steps down until it does.
    """
    image = _decode(data)
    budget = CHIP_BYTES * image.shape[0] * image.shape[1] / CHIP_PIXELS
    for rate in range(int(1000 * budget / image.size), 0, -1):
        ok, encoded = cv2.imencode(".jp2", image, [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, rate])
        if not ok:
            raise ConditionError("JPEG 2000 encoding failed")
        if encoded.size <= budget:
            return encoded.tobytes()
    raise ConditionError(f"no JPEG 2000 rate fits {budget:.0f} bytes")


# The single-studio condition: a tight crop of the face (no background, little or
# no hair), 45x60 pixels, grey, histogram-equalised: one studio's small frontal
# photos. The crop is sized by the face (the mean of the inter-eye distance and
# the eye-to-mouth distance over its median ratio, 1.1, on LFW), so the eyes come
# out about 45 / STUDIO_WIDTH_UNITS = 20 px apart, less in a turned head.
STUDIO_SIZE = (45, 60)
STUDIO_WIDTH_UNITS = 2.2
# Of the crop's height, the share above the eyes: eyebrows and forehead, not the hairline.
STUDIO_EYES_FROM_TOP = 0.26


def _single_studio(data: bytes, points: np.ndarray | None) -> bytes:
    if points is None:
        raise ConditionError("a tight crop of the face needs the set's published landmarks")
    grey = cv2.cvtColor(_decode(data), cv2.COLOR_BGR2GRAY)
    eyes, mouth = points[:2].mean(axis=0), points[3:5].mean(axis=0)
    unit = (float(np.linalg.norm(points[0] - points[1])) + float(np.linalg.norm(mouth - eyes)) / 1.1) / 2
    width = STUDIO_WIDTH_UNITS * unit
    height = width * STUDIO_SIZE[1] / STUDIO_SIZE[0]
    left = float(np.concatenate([points[:2, 0], points[3:5, 0]]).mean()) - width / 2
    top = float(eyes[1]) - STUDIO_EYES_FROM_TOP * height
    # Crop and resize in one affine step (area-averaged first where it shrinks much),
    # so a box past the image edge takes the border's pixels, not a black band.
    scale = STUDIO_SIZE[0] / width
    shrunk = grey
    if scale < 0.5:
        factor = 2 * scale
        shrunk = cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        left, top, scale = left * factor, top * factor, scale / factor
    matrix = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]])
    crop = cv2.warpAffine(shrunk, matrix, STUDIO_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _png(cv2.equalizeHist(crop))


def _chain(*steps: Callable[[bytes, np.ndarray | None], bytes]) -> Callable[[bytes, np.ndarray | None], bytes]:
    def apply(data: bytes, points: np.ndarray | None) -> bytes:
        for step in steps:
            data = step(data, points)
        return data

    return apply


@dataclass(frozen=True)
class Condition:
    name: str
    description: str
    apply: Callable[[bytes, np.ndarray | None], bytes]
    needs_landmarks: bool = False
    # What the service would take such an image as: a chip photo is a
    # document (JPEG 2000 is not a live capture format).
    use: ImageUse = ImageUse.LIVE


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("downscale-32px", "downscaled so the eyes are 32 px apart (PNG)", _downscale(32), True),
        Condition("downscale-24px", "downscaled so the eyes are 24 px apart (PNG)", _downscale(24), True),
        Condition("downscale-16px", "downscaled so the eyes are 16 px apart (PNG)", _downscale(16), True),
        Condition("greyscale", "converted to one grey channel (PNG)", _greyscale),
        Condition("small-grey", "eyes 24 px apart and greyscale (PNG)", _chain(_downscale(24), _greyscale), True),
        Condition(
            "single-studio",
            "tight face crop, no background or hair, 45x60 grey, equalised, eyes about 20 px apart (PNG)",
            _single_studio,
            True,
        ),
        Condition("blur-2px", "Gaussian blur, sigma 2 px (PNG)", _blur(2.0)),
        Condition("jpeg-q10", "JPEG at quality 10", _jpeg(10)),
        Condition(
            "jpeg2000-chip",
            f"JPEG 2000 at a chip photo's bits per pixel ({CHIP_BYTES // 1000} KB for 413x531)",
            _jpeg2000_chip,
            use=ImageUse.DOCUMENT,
        ),
    )
}


def condition(name: str) -> Condition:
    if name not in CONDITIONS:
        raise ConditionError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}")
    return CONDITIONS[name]
