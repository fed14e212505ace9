"""A display's pixel grid in the live capture: a face shown on a screen.

A camera that photographs a screen samples the panel's regular grid of
sub-pixels at a pitch that does not divide it: what the camera cannot resolve
folds into moiré, a periodic pattern across the whole face. Whatever the
panel shows (the chip photo, another photo, a video) and however it is lit,
the pattern stands out of the face's spectrum as a few sharp, isolated peaks
away from the centre, where a real face's spectrum falls off smoothly. The
document-photo replay check (:mod:`verifier.gate.replay`) compares the capture
with the chip photo and is blinded by strong moiré; this check looks for the
moiré itself, needs no reference, and catches most of what that one misses.

The score is how far the strongest peaks rise above the spectrum around them
(natural-log units of magnitude, averaged over the strongest few bins, which
a peak and its mirror image about the centre fill in pairs). The capture is
rank-transformed first (histogram equalisation), so a dim or washed-out panel
shows its pattern as clearly as a bright one; a Hann window keeps the crop's
edges from drawing lines through the spectrum.

What it cannot see: a panel whose pitch the camera resolves or whose pattern
the lens blurs away, and a print, whose paper has no grid (a halftone screen
would show, but the prints modelled here have none). What may trip it on a
genuine traveller: any periodic pattern on the face, such as the banding of a
flickering light source across a rolling-shutter sensor. Its threshold is
measured on genuine photographs (``python -m benchmarks.replay``); a site
whose camera shows such banding measures it there.
"""

from __future__ import annotations

import cv2
import numpy as np

# Side of the square (spectrum bins) over which the background around a bin is
# averaged: wide enough that one peak barely raises its own background.
_BACKGROUND_BINS = 11
# Bins this close to the centre hold the face's own shape, never a grid.
_MIN_RADIUS_BINS = 8
# Bins averaged into the score: the two strongest peaks and their mirror images.
_STRONGEST_BINS = 4


class DisplayPatternDetector:
    """Scores how strongly a periodic pattern (a display's grid, moiré) stands out in a face crop."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._geometry_of: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def score(self, crop: np.ndarray) -> float:
        """The mean prominence of the strongest off-centre spectral peaks of ``crop``."""
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
        ranked = cv2.equalizeHist(np.ascontiguousarray(grey, dtype=np.uint8)).astype(np.float32)
        window, ring = self._geometry(ranked.shape)
        spectrum = np.fft.fftshift(np.abs(np.fft.fft2((ranked - ranked.mean()) * window)))
        log_magnitude = np.log1p(spectrum).astype(np.float32)
        pad = _BACKGROUND_BINS // 2
        background = cv2.blur(np.pad(log_magnitude, pad, mode="wrap"), (_BACKGROUND_BINS, _BACKGROUND_BINS))
        prominence = (log_magnitude - background[pad:-pad, pad:-pad])[ring]
        return float(np.partition(prominence, -_STRONGEST_BINS)[-_STRONGEST_BINS:].mean())

    def is_display(self, score: float) -> bool:
        return score >= self.threshold

    def _geometry(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The Hann window and the ring of bins scored, for crops of ``shape``
        (kept as one tuple, replaced whole, so concurrent callers never mix two sizes)."""
        cached = self._geometry_of
        if cached is None or cached[0] != shape:
            h, w = shape
            ys, xs = np.mgrid[0:h, 0:w]
            radius = np.hypot(ys - h // 2, xs - w // 2)
            window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
            cached = (shape, window, (radius > _MIN_RADIUS_BINS) & (radius < min(h, w) / 2))
            self._geometry_of = cached
        return cached[1], cached[2]
