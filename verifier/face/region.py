"""A face's own region, cut from the full-resolution image at a fixed size.

The detector finds faces in a whole frame, where a companion at the back of
a walk-through gate may be a few dozen pixels wide and a traveller at the
front several hundred. Landmarks and alignment taken from that whole-frame
view would depend on the frame's size: the same face gives another template
in a 640x480 frame than in a 3840x2160 one.
So every face gets a second look: its neighbourhood (the box grown about
its centre) is resampled from the image as sent to one canvas size,
area-averaged when it shrinks and interpolated when it grows, and the
landmarks come from that canvas. A face then looks the same to the landmark
stage whatever frame it came in; with the default context the canvas shows
it as LFW's portraits do (box height about half the canvas), where the
thresholds were measured. The aligned crop is then cut from the image's own
pixels at those landmarks (verifier.face.align).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FaceRegion:
    """A canvas of fixed size showing one face's neighbourhood; canvas pixel
    ``p`` is image pixel ``p / scale + origin``."""

    pixels: np.ndarray
    origin: np.ndarray
    scale: float

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Canvas coordinates (points or x1, y1, x2, y2 boxes) to image coordinates."""
        origin = np.resize(self.origin, points.shape[-1]) if points.ndim == 1 else self.origin
        return (points / self.scale + origin).astype(np.float32)

    def from_image(self, points: np.ndarray) -> np.ndarray:
        """Image coordinates (points or x1, y1, x2, y2 boxes) to canvas coordinates."""
        origin = np.resize(self.origin, points.shape[-1]) if points.ndim == 1 else self.origin
        return ((points - origin) * self.scale).astype(np.float32)


def cut_region(bgr: np.ndarray, box: np.ndarray, size: tuple[int, int], context: float,
               fill: tuple[int, ...]) -> FaceRegion:
    """The ``size`` (width, height) canvas centred on ``box`` whose height is
    ``context`` times the box's height; what lies outside the image is ``fill``.

    The mapping is exact: a shrinking cut is area-averaged first (a bilinear
    warp of a large face would alias) and the residual sub-pixel shift and
    scale go into one bilinear warp."""
    width, height = size
    box_height = max(float(box[3] - box[1]), 1.0)
    scale = height / (box_height * context)
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float64)
    origin = centre - np.array([width, height], dtype=np.float64) / (2 * scale)
    h, w = bgr.shape[:2]
    x0 = int(np.clip(np.floor(origin[0]) - 1, 0, w - 1))
    y0 = int(np.clip(np.floor(origin[1]) - 1, 0, h - 1))
    x1 = int(np.clip(np.ceil(origin[0] + width / scale) + 1, x0 + 1, w))
    y1 = int(np.clip(np.ceil(origin[1] + height / scale) + 1, y0 + 1, h))
    source = bgr[y0:y1, x0:x1]
    if scale < 1.0:
        shrunk = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        source = cv2.resize(source, shrunk, interpolation=cv2.INTER_AREA)
    # Image pixels per source pixel. Coordinates are continuous (pixel j spans
    # [j, j + 1)), OpenCV's warp indexes pixel centres: hence the half pixels.
    step_x, step_y = (x1 - x0) / source.shape[1], (y1 - y0) / source.shape[0]
    matrix = np.array([[step_x * scale, 0.0, (x0 + 0.5 * step_x - origin[0]) * scale - 0.5],
                       [0.0, step_y * scale, (y0 + 0.5 * step_y - origin[1]) * scale - 0.5]], dtype=np.float64)
    pixels = cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return FaceRegion(pixels, origin.astype(np.float32), float(scale))
