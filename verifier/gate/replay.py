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
  stalls short of such a tilt). The coarse search also starts from the face
  12 % smaller and larger, since a copy turned by up to 30 degrees can align
  that much off the original's scale, and the start ECC correlates best is
  the one refined.
- **Re-lighting** (gamma, gain, offset, a lamp's fall-off): each crop's
  histogram is equalised (a rank transform, blind to any monotone change of
  intensity such as gamma, which normalised correlation alone is not) and
  then normalised for local contrast (local mean removed, divided by the local
  standard deviation: blind to slowly varying gain across the face).
- **Clipping** (a gamma or gain that crushes shadows to black or washes
  highlights to white) leaves regions that hold nothing to compare: only
  the pixels where the live crop is neither black nor white are compared
  (all of them where too few are left to judge by).
- **A display's pixel grid, its moiré, print dots and sensor noise** are fine
  detail: the crops are compared at half the aligned resolution after a
  Gaussian blur, where that detail has been averaged away but eyes, mouth and
  hair strands that tell two photographs apart remain. Half resolution also
  makes the homography search cheap (both orientations, three coarse starts
  each, ~9 ms on 2 cores: README, Presentation attacks).

The score is how well the gradients' directions agree between the central
regions of the prepared crops after the warp (the cosine of the angle between
the two gradients at each pixel, weighted by the weaker of the two
magnitudes, after a further Gaussian blur). A direction survives any
intensity change that is monotone where it acts (gamma, gain, a lamp's
fall-off), which the correlation of values does not quite: after a strong
gamma the rank transform leaves steps and flattened bands whose values no
longer line up, while their edges still point the same way. The weaker
magnitude as weight lets what one crop lost (a washed-out cheek, a crushed
shadow) drop out rather than pull the score down. At or above the threshold
measured on genuine pairs (``python -m benchmarks.replay``) it is a replay.
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
# central region is compared instead.
_CLIPPED_DARK = 3
_CLIPPED_BRIGHT = 252
_MIN_INFORMATIVE = 0.1
# Gaussian blur (pixels at the compared size) before the gradients are taken:
# a display's moiré and strong noise are still in the prepared crops at the
# scale of a pixel or two, where they would turn the gradients' directions.
_GRADIENT_SIGMA = 1.0
# ECC's Gaussian pre-filter size for its gradients.
_ECC_GAUSS = 5
# The coarse level of the homography search, relative to the compared size,
# and the maps of a warp between the two levels.
_COARSE = 0.5
_DOWN = np.diag([_COARSE, _COARSE, 1.0]).astype(np.float32)
_UP = np.linalg.inv(_DOWN).astype(np.float32)


# Where the coarse search starts besides the identity: the face scaled about
# the centre by these factors (a turned or tilted copy can align that much
# smaller or larger than the original, beyond ECC's reach from the identity).
# The start that ECC correlates best at the coarse level is refined.
_START_SCALES = (0.88, 1.12)
# The coarse level's share of the refinement's iterations: it only has to pick
# the starts worth refining and bring them within the finer level's reach.
_COARSE_ITERATIONS = 0.3


def _starts(shape: tuple[int, int]) -> list[np.ndarray]:
    """The starts of the coarse search on crops of ``shape`` (rows, columns)."""
    cy, cx = shape[0] / 2, shape[1] / 2
    return [np.eye(3, dtype=np.float32)] + [
        np.array([[f, 0, cx * (1 - f)], [0, f, cy * (1 - f)], [0, 0, 1]], np.float32) for f in _START_SCALES]


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


def _orientation_agreement(a: np.ndarray, b: np.ndarray, kept: np.ndarray) -> float:
    """Mean cosine of the angle between the gradients of ``a`` and ``b`` at the
    ``kept`` pixels, weighted by the weaker of the two magnitudes (1: every
    edge points the same way in both)."""
    ax, ay = (cv2.Sobel(a, cv2.CV_32F, 1, 0), cv2.Sobel(a, cv2.CV_32F, 0, 1))
    bx, by = (cv2.Sobel(b, cv2.CV_32F, 1, 0), cv2.Sobel(b, cv2.CV_32F, 0, 1))
    a_magnitude, b_magnitude = np.hypot(ax, ay)[kept], np.hypot(bx, by)[kept]
    weight = np.minimum(a_magnitude, b_magnitude)
    total = float(weight.sum())
    if total <= 0:
        return 0.0
    cosine = (ax[kept] * bx[kept] + ay[kept] * by[kept]) / np.maximum(a_magnitude * b_magnitude, 1e-12)
    return float((cosine * weight).sum() / total)


class ReplayDetector:
    """Scores how likely two aligned face crops are one photograph (1: the same pixels)."""

    def __init__(self, threshold: float, iterations: int, epsilon: float) -> None:
        self.threshold = threshold
        self.criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, epsilon)
        self.coarse_criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT,
                                max(1, round(iterations * _COARSE_ITERATIONS)), epsilon)

    def score(self, live: np.ndarray, reference: np.ndarray) -> float:
        """The higher of :meth:`same_orientation` for the live crop as it is
        and mirrored: a replayed photo scores high in one of the two, a second
        photograph in neither."""
        target, moving, informative = _prepare(reference), _prepare(live), _informative(live)
        return max(self._oriented(target, moving, informative),
                   self._oriented(target, np.ascontiguousarray(moving[:, ::-1]),
                                  np.ascontiguousarray(informative[:, ::-1])))

    def same_orientation(self, live: np.ndarray, reference: np.ndarray) -> float:
        """The score without the mirror: for crops of one camera's stream
        (:mod:`verifier.gate.motion`), where nothing turns a face over."""
        return self._oriented(_prepare(reference), _prepare(live), _informative(live))

    def _oriented(self, target: np.ndarray, moving: np.ndarray, informative: np.ndarray) -> float:
        """The coarse homography search from each start; the one that ECC
        correlates best at the coarse level is refined and scored."""
        coarse_target, coarse_moving = _halved(target), _halved(moving)
        found = [self._ecc(coarse_target, coarse_moving, start, self.coarse_criteria)
                 for start in _starts(coarse_target.shape)]
        warp = max(found, key=lambda correlation_warp: correlation_warp[0])[1]
        return self._refined(target, moving, informative, _UP @ warp @ _DOWN)

    def _refined(self, target: np.ndarray, moving: np.ndarray, informative: np.ndarray, start: np.ndarray) -> float:
        """Agreement of the central regions' informative pixels after ECC's
        refinement at the compared size from ``start``. Where ECC does not
        converge the start is kept (the crops are then too unlike for a copy,
        and the agreement says so)."""
        warp = self._ecc(target, moving, start, self.criteria)[1]
        size = target.shape[::-1]
        moving = cv2.warpPerspective(moving, warp, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REPLICATE)
        informative = cv2.warpPerspective(informative, warp, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                          borderMode=cv2.BORDER_REPLICATE)
        h, w = target.shape
        dy, dx = int(h * _BORDER), int(w * _BORDER)
        kept = np.zeros((h, w), dtype=bool)
        kept[dy:h - dy, dx:w - dx] = informative[dy:h - dy, dx:w - dx].astype(bool)
        if kept[dy:h - dy, dx:w - dx].mean() < _MIN_INFORMATIVE:
            kept[dy:h - dy, dx:w - dx] = True
        return _orientation_agreement(cv2.GaussianBlur(target, (0, 0), _GRADIENT_SIGMA),
                                      cv2.GaussianBlur(moving, (0, 0), _GRADIENT_SIGMA), kept)

    @staticmethod
    def _ecc(target: np.ndarray, moving: np.ndarray, start: np.ndarray,
             criteria: tuple[int, int, float]) -> tuple[float, np.ndarray]:
        """ECC's correlation and the homography it reaches from ``start``;
        (-1, ``start``) where it does not converge."""
        warp = np.ascontiguousarray(start, dtype=np.float32)
        try:
            correlation, found = cv2.findTransformECC(target, moving, warp.copy(), cv2.MOTION_HOMOGRAPHY,
                                                      criteria, None, _ECC_GAUSS)
        except cv2.error:
            return -1.0, warp
        return float(correlation), found

    def is_replay(self, score: float) -> bool:
        return score >= self.threshold
