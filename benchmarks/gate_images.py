"""Gate-like test images made from real photos: a 640x480 camera frame and a ~20 KB chip photo.

The photos are the face_recognition 1.3.0 sdist's (fetched by `verifier models fetch
--assets`), so every benchmark runs on a fresh machine.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from verifier.config import Settings
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest

CAPTURE_SIZE = (640, 480)
CHIP_SIZE = (413, 531)  # ICAO portrait proportions, 35x45 mm at ~300 dpi
CHIP_TARGET_BYTES = 20_000


def photos(settings: Settings) -> dict[str, Path]:
    manifest = load_manifest(settings.models.manifest)
    return fetch_asset(manifest.assets["face-recognition-photos"], settings.models.cache_dir)


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the aspect of ``size`` and resize to it."""
    width, height = size
    h, w = image.shape[:2]
    scale = min(w / width, h / height)
    cw, ch = int(width * scale), int(height * scale)
    x, y = (w - cw) // 2, (h - ch) // 2
    return cv2.resize(image[y : y + ch, x : x + cw], size, interpolation=cv2.INTER_AREA)


def capture_jpeg(photo: Path, quality: int = 90) -> bytes:
    """A 640x480 camera-like frame of the photo."""
    return cv2.imencode(".jpg", _fit(cv2.imread(str(photo)), CAPTURE_SIZE), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def chip_jpeg(photo: Path) -> bytes:
    """An ICAO-proportioned portrait compressed to about 20 KB, as read from a chip."""
    portrait = _fit(cv2.imread(str(photo)), CHIP_SIZE)
    best = b""
    for quality in range(95, 10, -5):
        best = cv2.imencode(".jpg", portrait, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        if len(best) <= CHIP_TARGET_BYTES:
            break
    return best
