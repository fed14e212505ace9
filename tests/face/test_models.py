"""Detector, landmarks and embedder classes on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from verifier.face.align import align
from verifier.face.detector import FaceDetector
from verifier.pipeline import FaceEngine


@pytest.fixture(scope="module")
def obama(photos: dict[str, Path]) -> np.ndarray:
    return cv2.imread(str(photos["obama.jpg"]))


def test_detector_finds_one_face_with_or_without_letterbox(engine: FaceEngine, obama: np.ndarray) -> None:
    boxes = []
    for letterbox in (True, False):
        settings = engine.detector.settings.model_copy(update={"letterbox": letterbox})
        detector = FaceDetector(engine.detector.spec, engine.detector.session, settings)
        (found,) = detector.detect_batch([obama])
        assert len(found) == 1 and found[0].score > 0.9
        boxes.append(found[0].box)
    overlap_x = min(boxes[0][2], boxes[1][2]) - max(boxes[0][0], boxes[1][0])
    assert overlap_x > 0.7 * (boxes[0][2] - boxes[0][0])


def test_detector_finds_nothing_in_a_wall(engine: FaceEngine, obama: np.ndarray) -> None:
    wall = obama[:60, :60].copy().repeat(8, 0).repeat(8, 1)
    assert engine.detector.detect_batch([wall]) == [[]]


def test_landmarks_batch_equals_single(engine: FaceEngine, obama: np.ndarray, photos: dict[str, Path]) -> None:
    biden = cv2.imread(str(photos["biden.jpg"]))
    faces = [(img, engine.detector.detect_batch([img])[0][0].box) for img in (obama, biden)]
    together = engine.landmarks.five_points(faces)
    apart = [engine.landmarks.five_points([face])[0] for face in faces]
    assert np.allclose(together, apart, atol=1e-3)


def test_embedder_batches_and_mirrors(engine: FaceEngine, obama: np.ndarray) -> None:
    box = engine.detector.detect_batch([obama])[0][0].box
    crop = align(obama, engine.landmarks.five_points([(obama, box)])[0])
    single = engine.embedder.embed([crop])
    double = engine.embedder.embed([crop, crop[:, ::-1].copy()])
    assert single.shape == (1, 192)
    assert np.allclose(double[0], single[0], atol=1e-5)
    assert 0.7 < float(double[0] @ double[1]) < 0.9999
    assert engine.embedder.embed([]).shape == (0, 192)
