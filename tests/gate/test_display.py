"""The display-grid check on real photos through the real pipeline: a face
photographed off a screen shows the panel's grid as moiré; a photograph of a
face does not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.replay import ATTACKS
from verifier.config import Settings
from verifier.gate.display import DisplayPatternDetector
from verifier.imaging import ImageUse
from verifier.pipeline import FaceEngine, Selection

PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
# The panel renders each photo pixel as a 3x3 cell: photos are brought to a
# portrait's width first, so the panel stays within the live pixel limit.
WIDTH = 300


@pytest.fixture(scope="module")
def display(settings: Settings) -> DisplayPatternDetector:
    return DisplayPatternDetector(settings.gate.display_pattern_threshold)


def _portrait(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return cv2.resize(bgr, (WIDTH, round(WIDTH * bgr.shape[0] / bgr.shape[1])), interpolation=cv2.INTER_AREA)


def _aligned(engine: FaceEngine, bgr: np.ndarray) -> np.ndarray:
    data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    face = engine.analyse(data, Selection.LARGEST, ImageUse.LIVE)
    assert face.aligned is not None
    return face.aligned


@pytest.mark.parametrize("name", PHOTOS)
def test_a_photograph_shows_no_display_grid(display: DisplayPatternDetector, engine: FaceEngine,
                                            photos: dict[str, Path], name: str) -> None:
    score = display.score(_aligned(engine, _portrait(photos[name])))
    assert not display.is_display(score), score


def test_the_photos_on_a_screen_show_the_grid(display: DisplayPatternDetector, engine: FaceEngine,
                                             photos: dict[str, Path]) -> None:
    """Eight screens of each photo (tilt, lens blur and camera distance drawn at
    random): at least 12 of the 32 show their grid (19 of them do; 18 with the
    points averaged over shifted looks; the benchmark measures 68 % of 500), and for every
    photo the typical screen stands further out of the spectrum than the
    photograph itself. The count is over all four photos: one photo's eight
    screens are too few to pin a rate on (one of them shows 2 of 8, another 6)."""
    flagged = 0
    for name in PHOTOS:
        portrait = _portrait(photos[name])
        genuine = display.score(_aligned(engine, portrait))
        screens = [display.score(_aligned(engine, ATTACKS["screen (pixel grid, moire)"](portrait,
                                                                                       np.random.default_rng(seed))))
                   for seed in range(8)]
        flagged += sum(display.is_display(score) for score in screens)
        assert float(np.median(screens)) > genuine, (name, genuine, screens)
    assert flagged >= 12, flagged


def test_the_score_is_blind_to_brightness_and_mirroring(display: DisplayPatternDetector, engine: FaceEngine,
                                                        photos: dict[str, Path]) -> None:
    aligned = _aligned(engine, _portrait(photos["obama.jpg"]))
    dim = (aligned.astype(np.float32) * 0.4).astype(np.uint8)
    assert display.score(np.ascontiguousarray(aligned[:, ::-1])) == pytest.approx(display.score(aligned), abs=1e-4)
    assert display.score(dim) == pytest.approx(display.score(aligned), abs=0.15)
