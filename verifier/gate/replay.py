"""Document-photo replay: is the live capture the chip photo itself?

A replayed chip photo (injected digitally, re-encoded, resized, cropped,
rotated, re-lit, or printed and held up) matches its reference with a 1:1
score near 1, but so do many genuine captures of the same person: the
embedding cannot tell them apart. Pixels can. Two different photographs of
one face differ in expression, lighting, hair and pose in ways no global
geometric or photometric change undoes; one photograph and a copy of it do
not. So the aligned crops are compared after refining their residual
geometry: an affine warp found by enhanced correlation coefficient
maximisation (OpenCV's ``findTransformECC``), then the normalised
cross-correlation of the slightly blurred central region, which is blind to
gain and offset (re-lighting). A score at or above the threshold measured on
genuine pairs (``python -m benchmarks.replay``) is a replay.
"""

from __future__ import annotations

import cv2
import numpy as np

# Share of the aligned crop (each side) left out of the comparison: the
# border holds background and padding that a crop or rotation changes.
_BORDER = 0.15
_BLUR_SIGMA = 1.0


def _grey(crop: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return cv2.GaussianBlur(grey.astype(np.float32), (0, 0), _BLUR_SIGMA)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


class ReplayDetector:
    """Scores how likely two aligned face crops are one photograph (1: identical pixels)."""

    def __init__(self, threshold: float, iterations: int, epsilon: float) -> None:
        self.threshold = threshold
        self.criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, epsilon)

    def score(self, live: np.ndarray, reference: np.ndarray) -> float:
        """Normalised cross-correlation of the central regions after the affine
        refinement; without it when ECC does not converge (the crops are then
        too unlike for a copy, and the plain correlation says so)."""
        target, moving = _grey(reference), _grey(live)
        warp = np.eye(2, 3, dtype=np.float32)
        try:
            cv2.findTransformECC(target, moving, warp, cv2.MOTION_AFFINE, self.criteria, None, 5)
            moving = cv2.warpAffine(moving, warp, target.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REPLICATE)
        except cv2.error:
            pass
        h, w = target.shape
        dy, dx = int(h * _BORDER), int(w * _BORDER)
        return _ncc(target[dy:h - dy, dx:w - dx], moving[dy:h - dy, dx:w - dx])

    def is_replay(self, score: float) -> bool:
        return score >= self.threshold
