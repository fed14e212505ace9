"""Gate-like request images cut from real photos around the face a detector found.

A gate camera frame is a 640x480 JPEG (quality 90) with the face filling about a
third of its width; a passport chip photo is an ICAO-proportioned portrait
(35x45 mm at 300 dpi, 413x531) whose face fills most of the height, compressed
to about 20 KB as chips store it. Cutting around the detected face, rather than
the middle of the photo, keeps the whole face in frame whatever the photo's
composition.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

CAPTURE_SIZE = (640, 480)
CAPTURE_QUALITY = 90
# Frame width as a multiple of the face box width: a traveller about 60 cm from the camera.
CAPTURE_FACE_SPAN = 3.0
CHIP_SIZE = (413, 531)
CHIP_TARGET_BYTES = 20_000
# Portrait height as a multiple of the face box height (the box runs brow to chin;
# ICAO wants chin to crown at 70-80 % of the height), and where the box centre sits.
CHIP_FACE_SPAN = 1.7
CHIP_FACE_CENTRE_Y = 0.55
_QUALITY_RANGE = (5, 95)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class GatePair:
    """A camera frame and a chip photo of one person, from two different photos."""

    person: str
    probe_name: str
    probe: bytes
    chip_name: str
    chip: bytes
    chip_quality: int


def _window(image: Image.Image, box: Box, span: float, size: tuple[int, int], centre_y: float) -> Image.Image:
    """Cut a window of ``size``'s aspect around ``box`` and resize it to ``size``.

    The window is ``span`` face heights tall (or wide, for a landscape frame),
    moved to lie inside the photo and shrunk only when the photo is smaller.
    """
    x1, y1, x2, y2 = box
    aspect = size[0] / size[1]
    if aspect >= 1:
        width = span * (x2 - x1)
        height = width / aspect
    else:
        height = span * (y2 - y1)
        width = height * aspect
    shrink = min(1.0, image.width / width, image.height / height)
    width, height = width * shrink, height * shrink
    left = min(max((x1 + x2) / 2 - width / 2, 0.0), image.width - width)
    top = min(max((y1 + y2) / 2 - height * centre_y, 0.0), image.height - height)
    region = (round(left), round(top), round(left + width), round(top + height))
    return image.crop(region).resize(size, Image.Resampling.LANCZOS)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def capture_jpeg(photo: bytes, box: Box) -> bytes:
    """A 640x480 camera frame around the face in ``photo``."""
    with Image.open(io.BytesIO(photo)) as image:
        frame = _window(image.convert("RGB"), box, CAPTURE_FACE_SPAN, CAPTURE_SIZE, 0.5)
    return _jpeg(frame, CAPTURE_QUALITY)


def chip_jpeg(photo: bytes, box: Box) -> tuple[bytes, int]:
    """An ICAO-like portrait around the face, at the JPEG quality whose size is
    nearest to 20 KB without exceeding it (found by bisection); with that quality."""
    with Image.open(io.BytesIO(photo)) as image:
        portrait = _window(image.convert("RGB"), box, CHIP_FACE_SPAN, CHIP_SIZE, CHIP_FACE_CENTRE_Y)
    low, high = _QUALITY_RANGE
    best = (_jpeg(portrait, low), low)
    while low <= high:
        quality = (low + high) // 2
        data = _jpeg(portrait, quality)
        if len(data) <= CHIP_TARGET_BYTES:
            best = (data, quality)
            low = quality + 1
        else:
            high = quality - 1
    return best


def gate_pairs(photos: dict[str, bytes], boxes: dict[str, Box], people: dict[str, list[str]]) -> list[GatePair]:
    """For each person with two or more photos, each photo as the camera frame with
    the next one (cyclically) as the chip; ``boxes`` holds each photo's face box."""
    pairs = []
    for person, names in people.items():
        for i, probe_name in enumerate(names if len(names) > 1 else []):
            chip_name = names[(i + 1) % len(names)]
            chip, quality = chip_jpeg(photos[chip_name], boxes[chip_name])
            probe = capture_jpeg(photos[probe_name], boxes[probe_name])
            pairs.append(GatePair(person, probe_name, probe, chip_name, chip, quality))
    return pairs


def upscaled(photo: bytes, size: tuple[int, int], fmt: str = "JPEG", **options: object) -> bytes:
    """A real photo stretched to ``size`` (bicubic) and encoded as ``fmt``: the
    most expensive image a sender can make within a use's limits, still holding
    a face (the costliest are WEBP for a live frame and JPEG 2000 for a chip
    photo: README, Security)."""
    with Image.open(io.BytesIO(photo)) as image:
        out = io.BytesIO()
        image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(out, fmt, **options)
        return out.getvalue()


def max_cost_live_frame(photo: bytes) -> bytes:
    """The costliest live capture the default limits accept: a 4096x3072 WEBP (about 160 ms to decode)."""
    return upscaled(photo, (4096, 3072), "WEBP", quality=90)


def max_cost_chip(photo: bytes) -> bytes:
    """The costliest chip photo the default limits accept: a 2.5 Mpixel JPEG 2000 under 1 MiB."""
    return upscaled(photo, (1280, 1920), "JPEG2000", quality_mode="rates", quality_layers=[8])
