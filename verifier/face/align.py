"""Alignment: a 5-point similarity transform onto the standard 112x112 template."""

from __future__ import annotations

import cv2
import numpy as np

from verifier.errors import Reason, VerifierError

# Where the eyes, nose tip and mouth corners sit in a 112x112 ArcFace crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
ALIGNED_SIZE = 112


def similarity_to_template(points: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The 2x3 rotation-scale-translation that best maps ``points`` onto the template."""
    template = ARCFACE_TEMPLATE * (size / ALIGNED_SIZE)
    matrix, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        raise VerifierError(Reason.NO_FACE, "face landmarks are degenerate; no usable face")
    return matrix


def align(bgr: np.ndarray, points: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """A ``size`` x ``size`` BGR crop of the face with its landmarks on the template."""
    matrix = similarity_to_template(points, size)
    return cv2.warpAffine(bgr, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
