"""Decode and validate image bytes from a kiosk, a passport chip or an agency.

Checks run cheapest first, and everything that can be refused is refused before
a single pixel is decoded:

1. byte size, against the limit of the image's use (a live capture, a chip
   photo, an enrolment photo);
2. the header (format, declared size, EXIF orientation, read without decoding):
   too many pixels for the use, or more pixels than the bytes could plausibly
   hold (a few hundred bytes declaring tens of megapixels), is refused;
3. the file's structure: a truncated or corrupted file is refused whole, never
   decoded into a partial picture (PNG chunk CRCs and IEND, the JPEG 2000
   tile-part lengths and end-of-codestream marker, the WEBP RIFF sizes; JPEG
   is decoded by libjpeg-turbo in strict mode, where any corrupt-data or
   premature-end warning is an error);
4. the decode, at reduced scale where the codec allows it (JPEG's DCT
   scaling), since the face stages never need more than a working resolution;
   every decoder runs outside the GIL, so one costly image slows only its own
   request; at most a configured number of large decodes run at once.

Every image comes out upright: the EXIF orientation (JPEG, MPO, PNG, WEBP) is
applied here, for every format alike, and ``original_width`` and
``original_height`` are those of the upright picture, the frame in which faces
are reported.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from verifier.config import ImageUseLimits, ImagingSettings
from verifier.errors import Reason, VerifierError

# EXIF orientation tag (0x0112) values 2-8 to the steps that make the picture
# upright: an optional mirror (left-right) and then a clockwise rotation.
_ORIENTATION_TAG = 0x0112
_UPRIGHT: dict[int, tuple[bool, int | None]] = {
    2: (True, None),
    3: (False, cv2.ROTATE_180),
    4: (True, cv2.ROTATE_180),
    5: (True, cv2.ROTATE_90_COUNTERCLOCKWISE),
    6: (False, cv2.ROTATE_90_CLOCKWISE),
    7: (True, cv2.ROTATE_90_CLOCKWISE),
    8: (False, cv2.ROTATE_90_COUNTERCLOCKWISE),
}
# Containers recognised by their first bytes that we refuse by name rather than
# as undecodable: ISO base media files (HEIC, HEIF, AVIF) and JPEG XL.
_ISO_BMFF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")
_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


class ImageUse(Enum):
    """What an image is for; each use has its own size limits (ImagingSettings)."""

    LIVE = "live"  # a kiosk's capture: Verify and Identify probes, ExtractTemplate
    DOCUMENT = "document"  # a chip photo: the Verify reference
    ENROLMENT = "enrolment"  # a watch-list enrolment photo


@dataclass(frozen=True)
class DecodedImage:
    """An upright BGR image at working resolution; ``scale`` maps it back to the
    upright original (``original_width`` x ``original_height``)."""

    bgr: np.ndarray
    scale: float
    original_width: int
    original_height: int
    format: str

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Coordinates in the working image to coordinates in the upright image as sent."""
        return points / self.scale


@dataclass(frozen=True)
class _Header:
    format: str
    width: int  # as stored, before the orientation is applied
    height: int
    orientation: int

    @property
    def upright_size(self) -> tuple[int, int]:
        turned = self.orientation in (5, 6, 7, 8)
        return (self.height, self.width) if turned else (self.width, self.height)


def _undecodable(fmt: str, why: str) -> VerifierError:
    return VerifierError(Reason.IMAGE_UNDECODABLE, f"{fmt} image is {why}", format=fmt)


def _refused_container(data: bytes) -> str | None:
    if data[4:8] == b"ftyp" and data[8:12] in _ISO_BMFF_BRANDS:
        return "HEIF/AVIF"
    if data.startswith(_JXL_SIGNATURES):
        return "JPEG XL"
    return None


def _orientation(probe: Image.Image) -> int:
    """The EXIF orientation, read from the header alone. Pillow's getexif() on a
    PNG decodes the whole image looking for an eXIf chunk after the pixels; the
    PNG specification puts eXIf before the first IDAT, so only that one counts."""
    if probe.format == "PNG":
        exif = Image.Exif()
        raw = probe.info.get("exif")
        if isinstance(raw, bytes):
            exif.load(raw)
    else:
        exif = probe.getexif()
    value = exif.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _header(data: bytes) -> _Header:
    refused = _refused_container(data)
    if refused is not None:
        raise VerifierError(Reason.IMAGE_FORMAT_UNSUPPORTED, f"{refused} images are not accepted", format=refused)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as probe:
                return _Header(str(probe.format), int(probe.width), int(probe.height), _orientation(probe))
    except Image.DecompressionBombError as exc:
        raise VerifierError(Reason.IMAGE_TOO_LARGE, "image declares more pixels than allowed") from exc
    except Exception as exc:  # noqa: BLE001 - any header the codec rejects means undecodable
        raise VerifierError(Reason.IMAGE_UNDECODABLE, "image bytes are not a readable image") from exc


# --- structure checks: cheap walks over the container, no pixel decoded ------------


def _check_png(data: bytes) -> None:
    """Every chunk's CRC must hold and the file must reach IEND: a truncated or
    bit-flipped PNG fails here (CRC-32 runs at GB/s, the walk is per chunk)."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > len(data):
            break
        kind = data[pos + 4 : pos + 8]
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise _undecodable("PNG", f"corrupted (bad CRC in its {kind!r} chunk)")
        if kind == b"IEND":
            return
        pos = end
    raise _undecodable("PNG", "truncated (no IEND chunk)")


def _check_webp(data: bytes) -> None:
    """The RIFF size must cover the file and every chunk must fit in it."""
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = 8 + riff_size
    if end > len(data):
        raise _undecodable("WEBP", "truncated (shorter than its RIFF size)")
    pos = 12
    while pos + 8 <= end:
        (size,) = struct.unpack_from("<I", data, pos + 4)
        pos += 8 + size + (size & 1)
    if pos != end:
        raise _undecodable("WEBP", "corrupted (its chunks do not fill the RIFF size)")


@dataclass(frozen=True)
class _Codestream:
    levels: int  # wavelet decomposition levels (checked for sanity)
    precision: int  # bits per sample of the first component (checked for sanity)
    width: int  # the image area the codestream (SIZ) declares: what OpenJPEG decodes
    height: int


def _jp2_codestream(data: bytes) -> bytes:
    """The contiguous codestream of a JP2 file (its ``jp2c`` box), or the file
    itself when it is a bare J2K codestream."""
    if data.startswith(b"\xff\x4f\xff\x51"):
        return data
    pos = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:
            if pos + 16 > len(data):
                break
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif length == 0:
            length = len(data) - pos
        if length < header or pos + length > len(data):
            raise _undecodable("JPEG2000", f"truncated (its {kind!r} box runs past the end)")
        if kind == b"jp2c":
            return data[pos + header : pos + length]
        pos += length
    raise _undecodable("JPEG2000", "truncated (no codestream box)")


def _check_jpeg2000(data: bytes) -> _Codestream:
    """Walk the main header and every tile-part by its declared length; the last
    must end exactly at the end-of-codestream marker. OpenJPEG decodes a
    truncated codestream into a partial (grey or garbage) picture, so this walk
    is what refuses it."""
    stream = _jp2_codestream(data)
    if not stream.startswith(b"\xff\x4f\xff\x51") or len(stream) < 8:
        raise _undecodable("JPEG2000", "corrupted (no SOC/SIZ at the codestream start)")
    levels, precision, width, height, tiles, pos = -1, 0, 0, 0, 0, 2
    while True:  # main header segments up to the first tile-part
        if pos + 4 > len(stream):
            raise _undecodable("JPEG2000", "truncated (in its main header)")
        marker, length = struct.unpack_from(">HH", stream, pos)
        if marker == 0xFF90:
            break
        if marker >> 8 != 0xFF or length < 2:
            raise _undecodable("JPEG2000", "corrupted (bad marker in its main header)")
        if marker == 0xFF51 and pos + 43 <= len(stream):  # SIZ: image and tile grid; Ssiz of component 0
            xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz = struct.unpack_from(">8I", stream, pos + 6)
            width, height = xsiz - xosiz, ysiz - yosiz
            if xtsiz == 0 or ytsiz == 0 or xtosiz > xosiz or ytosiz > yosiz or width <= 0 or height <= 0:
                raise _undecodable("JPEG2000", "corrupted (impossible image or tile grid in SIZ)")
            tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
            precision = (stream[pos + 40] & 0x7F) + 1
        elif marker == 0xFF52 and pos + 10 <= len(stream):  # COD: decomposition levels at byte 9
            levels = stream[pos + 9]
        pos += 2 + length
    if levels < 0 or not 1 <= precision <= 16:
        raise _undecodable("JPEG2000", "corrupted (no usable SIZ/COD in its main header)")
    eoc = len(stream) - 2
    if stream[eoc:] != b"\xff\xd9":
        raise _undecodable("JPEG2000", "truncated (no end-of-codestream marker)")
    present: set[int] = set()
    while pos < eoc:
        if pos + 12 > eoc or stream[pos : pos + 2] != b"\xff\x90":
            raise _undecodable("JPEG2000", "corrupted (a tile-part does not start where the last one ended)")
        isot, psot = struct.unpack_from(">HI", stream, pos + 4)
        present.add(isot)
        pos = eoc if psot == 0 else pos + psot
        if psot != 0 and psot < 14:
            raise _undecodable("JPEG2000", "corrupted (a tile-part declares an impossible length)")
    if pos != eoc:
        raise _undecodable("JPEG2000", "truncated (its last tile-part runs past the end)")
    if len(present) != tiles or max(present, default=tiles) >= tiles:
        # OpenJPEG leaves a missing tile blank: a picture with holes, or a small
        # codestream whose header claims a larger image than its tiles cover.
        raise _undecodable("JPEG2000", f"incomplete ({len(present)} of its {tiles} tiles are present)")
    return _Codestream(levels, precision, width, height)


# --- decoders ------------------------------------------------------------------------


def _decode_jpeg(data: bytes, fmt: str, header: _Header, target: int) -> np.ndarray:
    """libjpeg-turbo in strict mode (a corrupt-data or premature-end warning is an
    error), at the smallest DCT scale that keeps the longer side >= ``target``.
    For MPO, libjpeg stops at the first picture's end."""
    longest = max(header.width, header.height)
    wanted = min(longest, target)
    min_width = (header.width * wanted + longest - 1) // longest
    min_height = (header.height * wanted + longest - 1) // longest
    try:
        _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace in ("CMYK", "YCCK"):
            cmyk = simplejpeg.decode_jpeg(data, colorspace="CMYK", min_width=min_width, min_height=min_height)
            # Adobe CMYK JPEGs store inverted values: each of C, M, Y times K is the B, G, R.
            k = cmyk[..., 3:4].astype(np.uint16)
            return (cmyk[..., 2::-1].astype(np.uint16) * k // 255).astype(np.uint8)
        return simplejpeg.decode_jpeg(data, colorspace="BGR", min_width=min_width, min_height=min_height)
    except ValueError as exc:
        raise _undecodable(fmt, f"truncated or corrupted ({exc})") from exc


def _decode_jpeg2000(data: bytes) -> np.ndarray:
    """OpenJPEG through OpenCV, which lets go of the GIL while it decodes. Pillow's
    reader would decode at a reduced resolution, but holds the GIL throughout:
    measured, one 4 Mpixel chip photo decoding (330 ms) left the server's other
    Python threads a tenth of their speed, so every gate waited on one sender.
    The JPEG 2000 size cap (``ImagingSettings.max_jpeg2000_pixels``) bounds the
    full decode instead."""
    return _decode_opencv(data, "JPEG2000")


def _decode_opencv(data: bytes, fmt: str) -> np.ndarray:
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if bgr is None or bgr.size == 0:
        raise _undecodable(fmt, "corrupted (the codec refused it)")
    return bgr


def _upright(bgr: np.ndarray, orientation: int) -> np.ndarray:
    if orientation not in _UPRIGHT:
        return bgr
    mirror, rotation = _UPRIGHT[orientation]
    if mirror:
        bgr = cv2.flip(bgr, 1)
    return bgr if rotation is None else cv2.rotate(bgr, rotation)


class ImageDecoder:
    """Validates and decodes images; one per engine, shared by all requests, so
    that the bound on concurrent large decodes holds across them."""

    def __init__(self, settings: ImagingSettings) -> None:
        self.settings = settings
        self._large = threading.BoundedSemaphore(settings.max_concurrent_large_decodes)

    def limits(self, use: ImageUse) -> ImageUseLimits:
        return {ImageUse.LIVE: self.settings.live, ImageUse.DOCUMENT: self.settings.document,
                ImageUse.ENROLMENT: self.settings.enrolment}[use]

    @contextmanager
    def _turn(self, pixels: int) -> Iterator[None]:
        if pixels <= self.settings.large_decode_pixels:
            yield
            return
        if not self._large.acquire(timeout=self.settings.large_decode_wait_seconds):
            raise VerifierError(
                Reason.OVERLOADED, "too many large images are being decoded; retry",
                limit=self.settings.max_concurrent_large_decodes,
            )
        try:
            yield
        finally:
            self._large.release()

    def _check_declared(self, data: bytes, header: _Header, limits: ImageUseLimits) -> None:
        width, height = header.upright_size
        pixels = width * height
        if pixels > limits.max_pixels:
            raise VerifierError(
                Reason.IMAGE_TOO_LARGE, f"image is {width}x{height} pixels, the limit for this use is {limits.max_pixels}",
                pixels=pixels, limit=limits.max_pixels,
            )
        if header.format == "JPEG2000" and pixels > self.settings.max_jpeg2000_pixels:
            raise VerifierError(
                Reason.IMAGE_TOO_LARGE,
                f"a JPEG 2000 of {width}x{height} pixels costs too much to decode (at most "
                f"{self.settings.max_jpeg2000_pixels} pixels: send a JPEG)",
                pixels=pixels, limit=self.settings.max_jpeg2000_pixels,
            )
        ratio = self.settings.max_pixels_per_byte.get(header.format)
        if ratio is not None and pixels > self.settings.plausibility_floor_pixels and pixels > ratio * len(data):
            raise VerifierError(
                Reason.IMAGE_TOO_LARGE,
                f"image declares {width}x{height} pixels in {len(data)} bytes, more than a real "
                f"{header.format} holds (at most {ratio:g} pixels a byte)",
                pixels=pixels, bytes=len(data),
            )
        if min(width, height) < self.settings.min_side:
            raise VerifierError(
                Reason.IMAGE_TOO_SMALL, f"image is {width}x{height}, smaller than {self.settings.min_side} pixels a side"
            )

    def decode(self, data: bytes, use: ImageUse) -> DecodedImage:
        """Validate ``data`` against the limits of its ``use`` and decode it to an
        upright BGR uint8 image. Greyscale becomes three equal channels and an
        alpha channel is dropped, so every later stage sees one layout."""
        if not data:
            raise VerifierError(Reason.IMAGE_EMPTY, "image is empty")
        limits = self.limits(use)
        if len(data) > limits.max_bytes:
            raise VerifierError(
                Reason.IMAGE_TOO_LARGE, f"image is {len(data)} bytes, the limit for this use is {limits.max_bytes}",
                bytes=len(data), limit=limits.max_bytes,
            )
        header = _header(data)
        fmt = header.format
        if fmt not in limits.formats:
            raise VerifierError(
                Reason.IMAGE_FORMAT_UNSUPPORTED,
                f"{fmt} images are not accepted as a {use.value} image (accepted: {', '.join(limits.formats)})",
                format=fmt, use=use.value,
            )
        self._check_declared(data, header, limits)
        codestream = _check_jpeg2000(data) if fmt == "JPEG2000" else None
        if codestream is not None and (codestream.width, codestream.height) != (header.width, header.height):
            raise _undecodable(fmt, "corrupted (its JP2 header and its codestream declare different sizes)")
        if fmt == "PNG":
            _check_png(data)
        elif fmt == "WEBP":
            _check_webp(data)
        target = self.settings.working_max_side
        with self._turn(header.width * header.height):
            if codestream is not None:
                bgr = _decode_jpeg2000(data)
            elif fmt in ("JPEG", "MPO"):
                bgr = _decode_jpeg(data, fmt, header, target)
            else:
                bgr = _decode_opencv(data, fmt)
            bgr = _upright(bgr, header.orientation)
            longest = max(bgr.shape[:2])
            if longest > target:
                factor = target / longest
                bgr = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        width, height = header.upright_size
        across, down = bgr.shape[1] / width, bgr.shape[0] / height
        if abs(across - down) > 0.05 * max(across, down):
            raise _undecodable(fmt, "inconsistent (its decoded shape disagrees with its header)")
        return DecodedImage(bgr=bgr, scale=across, original_width=width, original_height=height, format=fmt)
