"""The face region of the second look: its mapping back to the image is exact,
and a face looks the same in it whatever the size of the image it came from."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from verifier.config import Settings
from verifier.face.region import cut_region
from verifier.pipeline import FaceEngine, Selection


def _dots(size: tuple[int, int], points: np.ndarray) -> np.ndarray:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    for x, y in points:
        cv2.circle(image, (int(round(x - 0.5)), int(round(y - 0.5))), 2, (255, 255, 255), -1)
    return image


def _centroids(pixels: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY).astype(np.float32)
    count, labels = cv2.connectedComponents((grey > 40).astype(np.uint8))
    ys, xs = np.mgrid[0:grey.shape[0], 0:grey.shape[1]]
    found = []
    for label in range(1, count):
        weight = grey * (labels == label)
        found.append([(weight * xs).sum() / weight.sum() + 0.5, (weight * ys).sum() / weight.sum() + 0.5])
    return np.array(sorted(found))


def test_points_map_back_to_where_they_are_in_the_image_shrunk_or_grown() -> None:
    points = np.array([[1000.5, 800.5], [1150.5, 800.5], [1075.5, 950.5]], dtype=np.float32)
    image = _dots((2000, 1500), points)
    box = np.array([950.0, 700.0, 1200.0, 1000.0], dtype=np.float32)
    for size in ((320, 240), (1600, 1200)):  # shrunk to 0.4 and grown to 2x
        region = cut_region(image, box, size, 2.0, (0, 0, 0))
        assert region.pixels.shape == (size[1], size[0], 3)
        back = region.to_image(_centroids(region.pixels))
        assert np.allclose(np.sort(back, axis=0), np.sort(points, axis=0), atol=0.35 / min(region.scale, 1) + 0.3)
        assert np.allclose(region.from_image(region.to_image(points)), points, atol=1e-3)


def test_what_lies_outside_the_image_is_the_fill() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    region = cut_region(image, np.array([0.0, 0.0, 40.0, 40.0], np.float32), (320, 240), 2.0, (7, 8, 9))
    assert tuple(region.pixels[0, 0]) == (7, 8, 9) and tuple(region.pixels[-1, -1]) == (200, 200, 200)


def test_one_face_gives_one_template_in_a_small_and_a_4k_frame(engine: FaceEngine, photos: dict[str, Path]) -> None:
    """Obama with eyes 40 px apart in a 720x480 and in a 3840x2160 frame: the
    regions the second look sees, and so the templates, agree."""
    obama = cv2.imread(str(photos["obama.jpg"]), cv2.IMREAD_COLOR)
    face = engine.analyse(cv2.imencode(".png", obama)[1].tobytes()).face
    scale = 40.0 / float(np.linalg.norm(face.landmarks[0] - face.landmarks[1]))
    small = cv2.resize(obama, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    templates = []
    for size, (x, y) in (((720, 480), (150, 40)), ((3840, 2160), (3000, 1500))):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        frame[y:y + small.shape[0], x:x + small.shape[1]] = small
        result = engine.analyse(cv2.imencode(".png", frame)[1].tobytes())
        templates.append(result.template.vector)
    assert float(templates[0] @ templates[1]) > 0.99


@pytest.fixture(scope="module")
def averaged(settings: Settings) -> FaceEngine:
    """The served pack with the five points averaged over two more looks at shifted regions."""
    local = settings.model_copy(deep=True)
    local.detector.region_jitter_looks = 2
    return FaceEngine.from_settings(local)


def _spread(engine: FaceEngine, image: np.ndarray) -> float:
    """How far apart the templates of eight tight cuts of the face in ``image``
    are (1 - the least cosine): squares of 6 eye distances, each centred 0.15
    eye distances from the face's centre in another direction."""
    face = engine.analyse(cv2.imencode(".png", image)[1].tobytes()).face
    eyes = float(np.linalg.norm(face.landmarks[0] - face.landmarks[1]))
    centre = face.landmarks.mean(axis=0)
    vectors = []
    for angle in np.arange(8) * np.pi / 4:
        x, y = centre + 0.15 * eyes * np.array([np.cos(angle), np.sin(angle)])
        x0, y0 = int(max(0.0, x - 3 * eyes)), int(max(0.0, y - 3 * eyes))
        cut = image[y0:int(y + 3 * eyes), x0:int(x + 3 * eyes)]
        vectors.append(engine.analyse(cv2.imencode(".png", cut)[1].tobytes(), Selection.CENTRE).template.vector)
    stacked = np.array(vectors)
    return 1.0 - float((stacked @ stacked.T).min())


def test_points_averaged_over_shifted_looks_move_less_with_where_the_face_is_cut(
    engine: FaceEngine, averaged: FaceEngine, photos: dict[str, Path]
) -> None:
    """The shipped photos, each cut eight ways: the cuts' templates agree more
    closely when the five points are the mean over the last look and looks at
    shifted regions (detector.region_jitter_looks 2) than with the last look's
    alone (the default), and no two cuts of one face are further apart than a
    second capture would move a score (README, The gate's camera)."""
    assert engine.settings.detector.region_jitter_looks == 0
    with_mean, last_look = [], []
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        image = cv2.imread(str(photos[name]), cv2.IMREAD_COLOR)
        with_mean.append(_spread(averaged, image))
        last_look.append(_spread(engine, image))
    assert sum(with_mean) < sum(last_look), (with_mean, last_look)
    assert max(with_mean) < 0.03, with_mean
