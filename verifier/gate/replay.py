"""Document-photo replay: is the live capture the chip photo itself?

A replayed chip photo (injected digitally, re-encoded, resized, cropped,
turned, mirrored, re-lit, shown on a screen or printed and held up) matches
its reference with a 1:1 score near 1, but so do many genuine captures of the
same person: the embedding cannot tell them apart. Pixels can. Two different
photographs of one face differ in expression, lighting, hair and pose in ways
no global geometric or photometric change undoes; one photograph and a copy
of it do not. So the aligned crops are compared after undoing what a phone,
a screen or a printer does to a photo:

- **Mirroring** (a phone's front camera, a print seen the wrong way round):
  the 5-point alignment template is nearly symmetric, so the aligned crop of
  a mirrored photo is close to the horizontal flip of the original's aligned
  crop. The live crop is compared in both orientations and the higher score
  kept: a copy matches in one of them, a second photograph in neither.
- **Turning, cropping, rescaling** are undone by alignment itself; what is
  left, and a print or screen tilted away from the camera (a keystone no
  affine warp undoes), by a homography found by enhanced correlation
  coefficient maximisation (OpenCV's ``findTransformECC``, MOTION_HOMOGRAPHY),
  coarse to fine: first at half the compared size, where a strong keystone
  (a print tilted 25-40 degrees) is within ECC's reach from the identity,
  then refined at the compared size from there (from the identity alone it
  stalls short of such a tilt).
- **Re-lighting** (gamma, gain, offset, a lamp's fall-off): each crop's
  histogram is equalised (a rank transform, blind to any monotone change of
  intensity such as gamma, which normalised correlation alone is not) and
  then normalised for local contrast (local mean removed, divided by the local
  standard deviation: blind to slowly varying gain across the face).
- **Clipping** (a gamma or gain that crushes shadows to black or washes
  highlights to white) leaves regions that hold nothing to compare: only
  the pixels where the live crop is neither black nor white are correlated
  (all of them where too few are left to judge by).
- **A display's pixel grid, its moiré, print dots and sensor noise** are fine
  detail: the crops are compared at half the aligned resolution after a
  Gaussian blur, where that detail has been averaged away but eyes, mouth and
  hair strands that tell two photographs apart remain. Half resolution also
  makes the homography search cheap (both orientations, both levels ~8 ms on 2 cores).

The score is the normalised cross-correlation of the central regions of the
prepared crops after the warp; at or above the threshold measured on genuine
pairs (``python -m benchmarks.replay``) it is a replay.
"""

from __future__ import annotations

import cv2
import numpy as np

# Share of the prepared crop (each side) left out of the comparison: the
# border holds background and padding that a crop, a turn or a tilt changes.
_BORDER = 0.15
# The crops are compared at this fraction of the aligned size (112 -> 56 px).
_SCALE = 0.5
# Gaussian blur (pixels at the compared size) against grid, moiré and noise.
_BLUR_SIGMA = 1.0
# Gaussian scale (pixels at the compared size) of the local contrast
# normalisation: about an eye's width, so a lamp's fall-off is removed and
# features are not. The variance floor keeps flat regions (a wall, a
# saturated cheek) from amplifying noise into structure.
_LOCAL_SIGMA = 4.0
_VARIANCE_FLOOR = 25.0
# Grey levels at or beyond which a live pixel is clipped (crushed or washed
# out), and the share of informative compared pixels below which the whole
# central region is correlated instead.
_CLIPPED_DARK = 3
_CLIPPED_BRIGHT = 252
_MIN_INFORMATIVE = 0.4
# ECC's Gaussian pre-filter size for its gradients.
_ECC_GAUSS = 5
# The coarse level of the homography search, relative to the compared size.
_COARSE = 0.5


def _grey(crop: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop


def _prepare(crop: np.ndarray) -> np.ndarray:
    """Grey, histogram-equalised, halved, blurred, locally contrast-normalised."""
    grey = _grey(crop)
    ranked = cv2.equalizeHist(np.ascontiguousarray(grey, dtype=np.uint8)).astype(np.float32)
    small = cv2.resize(ranked, None, fx=_SCALE, fy=_SCALE, interpolation=cv2.INTER_AREA)
    smooth = cv2.GaussianBlur(small, (0, 0), _BLUR_SIGMA)
    detail = smooth - cv2.GaussianBlur(smooth, (0, 0), _LOCAL_SIGMA)
    variance = cv2.GaussianBlur(detail * detail, (0, 0), _LOCAL_SIGMA)
    return detail / np.sqrt(variance + _VARIANCE_FLOOR)


def _informative(crop: np.ndarray) -> np.ndarray:
    """The compared pixels (at the compared size) whose whole footprint in
    ``crop`` is neither clipped to black nor to white."""
    grey = _grey(crop)
    unclipped = ((grey > _CLIPPED_DARK) & (grey < _CLIPPED_BRIGHT)).astype(np.float32)
    return (cv2.resize(unclipped, None, fx=_SCALE, fy=_SCALE, interpolation=cv2.INTER_AREA) > 0.99).astype(np.uint8)


def _halved(prepared: np.ndarray) -> np.ndarray:
    """The coarse level of the homography search (56 -> 28 px)."""
    return cv2.resize(prepared, None, fx=_COARSE, fy=_COARSE, interpolation=cv2.INTER_AREA)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


class ReplayDetector:
    """Scores how likely two aligned face crops are one photograph (1: the same pixels)."""

    def __init__(self, threshold: float, iterations: int, epsilon: float) -> None:
        self.threshold = threshold
        self.criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, epsilon)

    def score(self, live: np.ndarray, reference: np.ndarray) -> float:
        """The higher of :meth:`same_orientation` for the live crop as it is
        and mirrored: a replayed photo scores high in one of the two."""
        target, moving, informative = _prepare(reference), _prepare(live), _informative(live)
        return max(self._refined(target, moving, informative),
                   self._refined(target, np.ascontiguousarray(moving[:, ::-1]),
                                 np.ascontiguousarray(informative[:, ::-1])))

    def same_orientation(self, live: np.ndarray, reference: np.ndarray) -> float:
        """The score without the mirror: for crops of one camera's stream
        (:mod:`verifier.gate.motion`), where nothing turns a face over."""
        return self._refined(_prepare(reference), _prepare(live), _informative(live))

    def _refined(self, target: np.ndarray, moving: np.ndarray, informative: np.ndarray) -> float:
        """Correlation of the central regions' informative pixels after the
        coarse-to-fine homography refinement. A level where ECC does not
        converge keeps the warp it started from (the crops are then too unlike
        for a copy, and the plain correlation says so)."""
        half = np.diag([_COARSE, _COARSE, 1.0]).astype(np.float32)
        coarse = self._ecc(_halved(target), _halved(moving), np.eye(3, dtype=np.float32))
        warp = self._ecc(target, moving, np.linalg.inv(half) @ coarse @ half)
        size = target.shape[::-1]
        moving = cv2.warpPerspective(moving, warp, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REPLICATE)
        informative = cv2.warpPerspective(informative, warp, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                          borderMode=cv2.BORDER_REPLICATE)
        h, w = target.shape
        dy, dx = int(h * _BORDER), int(w * _BORDER)
        central = (slice(dy, h - dy), slice(dx, w - dx))
        kept = informative[central].astype(bool)
        if kept.mean() < _MIN_INFORMATIVE:
            return _ncc(target[central], moving[central])
        return _ncc(target[central][kept], moving[central][kept])

    def _ecc(self, target: np.ndarray, moving: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The homography ECC reaches from ``start``; ``start`` where it does not converge."""
        warp = np.ascontiguousarray(start, dtype=np.float32)
        try:
            return cv2.findTransformECC(target, moving, warp.copy(), cv2.MOTION_HOMOGRAPHY, self.criteria, None,
                                        _ECC_GAUSS)[1]
        except cv2.error:
            return warp

    def is_replay(self, score: float) -> bool:
        return score >= self.threshold
