"""Static picture in a stream: did the tracked face only ever move rigidly?

A photograph or a screen held up to the camera and moved (nearer, sideways,
tilted) changes the face's position, size and in-plane angle, all of which
alignment and an affine refinement undo: its aligned crops stay one image. A
live face changes non-rigidly as the traveller walks in: pose, expression,
blinks, the light across it. So the track's newest crop is compared with each
earlier one by the replay measure in the camera's own orientation
(homography ECC, then normalised cross-correlation of rank-transformed,
contrast-normalised crops: :mod:`verifier.gate.replay`); if every comparison
stays at or above the static threshold, nothing but rigid motion was seen.

What this cannot see: a video replay on a screen (it moves non-rigidly), a
mask, or a traveller who stands perfectly still in even light (flagged: sent
to an officer, which is the safe side). Measured only on generated sequences
(README, Presentation attacks; tests/gate/test_screen_api.py).
"""

from __future__ import annotations

import numpy as np

from verifier.gate.replay import ReplayDetector


# Earlier crops the newest is compared with (evenly spaced, the first
# included): bounds the cost per frame whatever the track's length.
_COMPARED = 4


def static_picture(crops: list[np.ndarray], detector: ReplayDetector, threshold: float, min_frames: int) -> bool | None:
    """True when the aligned ``crops`` (oldest first) moved only rigidly; None
    while there are fewer than ``min_frames`` to judge by."""
    if len(crops) < min_frames:
        return None
    earlier = crops[:-1]
    picks = sorted({int(round(k)) for k in np.linspace(0, len(earlier) - 1, min(_COMPARED, len(earlier)))})
    return min(detector.same_orientation(crops[-1], earlier[k]) for k in picks) >= threshold
