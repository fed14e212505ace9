from __future__ import annotations

import cv2
import numpy as np
import pytest

from verifier.errors import Reason, VerifierError
from verifier.face.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align, similarity_to_template


def test_recovers_a_known_similarity() -> None:
    angle, scale, shift = np.deg2rad(12.0), 2.5, np.array([140.0, 75.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = ARCFACE_TEMPLATE @ rotation.T + shift
    matrix = similarity_to_template(points)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(mapped, ARCFACE_TEMPLATE, atol=1e-3)


def test_aligned_crop_puts_landmarks_on_the_template() -> None:
    image = np.zeros((400, 400, 3), np.uint8)
    points = ARCFACE_TEMPLATE * 3 + 20
    for x, y in points:
        cv2.circle(image, (round(x), round(y)), 4, (255, 255, 255), -1)
    crop = align(image, points)
    assert crop.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert crop[round(y), round(x)].max() > 200


def test_degenerate_landmarks_are_no_face() -> None:
    with pytest.raises(VerifierError) as caught:
        similarity_to_template(np.full((5, 2), 50.0, np.float32))
    assert caught.value.reason is Reason.NO_FACE
