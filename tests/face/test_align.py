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
        assert crop[round(y), round(x)].max() > 150  # dots of radius 4 at 3x, area-averaged to the template


def test_degenerate_landmarks_are_no_face() -> None:
    with pytest.raises(VerifierError) as caught:
        similarity_to_template(np.full((5, 2), 50.0, np.float32))
    assert caught.value.reason is Reason.NO_FACE


def test_the_fit_weighs_all_five_points() -> None:
    """With landmarks off by a few pixels, one of them more, the least-squares fit leaves
    no larger error over the five points than the robust fit alignment used before,
    which drops the worse points: strictly smaller wherever it dropped one."""
    rng = np.random.default_rng(3)
    better = 0
    for _ in range(20):
        points = ARCFACE_TEMPLATE * 2.1 + 60 + rng.normal(0, 1.5, (5, 2))
        points[rng.integers(5)] += rng.normal(0, 6, 2)
        points = points.astype(np.float32)
        ours = similarity_to_template(points)
        robust, _ = cv2.estimateAffinePartial2D(points, ARCFACE_TEMPLATE, method=cv2.LMEDS)

        def error(matrix: np.ndarray) -> float:
            return float(np.sum((points @ matrix[:, :2].T + matrix[:, 2] - ARCFACE_TEMPLATE) ** 2))

        assert error(ours) <= error(robust) * (1 + 1e-5)
        better += error(ours) < error(robust) * (1 - 1e-3)
    assert better >= 5


def test_non_finite_landmarks_are_no_face() -> None:
    points = ARCFACE_TEMPLATE.copy()
    points[2, 0] = np.nan
    with pytest.raises(VerifierError) as caught:
        similarity_to_template(points)
    assert caught.value.reason is Reason.NO_FACE


def test_a_face_many_times_the_templates_size_is_area_averaged_not_aliased() -> None:
    """A fine stripe pattern (period 2 px at 8x the template's scale) averages to
    flat grey in the aligned crop; one bilinear warp samples the stripes (here
    every sample a white one)."""
    scale = 8.0
    image = np.zeros((int(112 * scale), int(112 * scale), 3), np.uint8)
    image[:, ::2] = 255
    crop = align(image, ARCFACE_TEMPLATE * scale)
    centre = crop[20:90, 20:90].astype(np.float32)
    assert abs(float(centre.mean()) - 127.5) < 8 and float(centre.std()) < 12
    direct = cv2.warpAffine(image, similarity_to_template(ARCFACE_TEMPLATE * scale), (112, 112),
                            flags=cv2.INTER_LINEAR)
    sampled = direct[20:90, 20:90].astype(np.float32)
    assert abs(float(sampled.mean()) - 127.5) > 40 or float(sampled.std()) > 40
