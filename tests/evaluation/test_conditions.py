"""Derived capture conditions do what their names say, on real LFW images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from verifier.evaluation.conditions import CHIP_BYTES, CHIP_PIXELS, CONDITIONS, ConditionError, condition
from verifier.evaluation.datasets import IMAGES_DIR, read_landmarks
from verifier.evaluation.cli import LANDMARKS_FILE

KEY = "Aaron_Sorkin/Aaron_Sorkin_0002.jpg"


@pytest.fixture(scope="module")
def sample(lfw_dev: Path) -> tuple[bytes, np.ndarray]:
    return (lfw_dev / IMAGES_DIR / KEY).read_bytes(), read_landmarks(lfw_dev / LANDMARKS_FILE)[KEY]


def _decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("eyes", [32, 24, 16])
def test_downscaling_brings_the_eyes_to_the_named_distance(sample: tuple[bytes, np.ndarray], eyes: int) -> None:
    data, points = sample
    before = _decoded(data)
    after = _decoded(condition(f"downscale-{eyes}px").apply(data, points))
    factor = after.shape[1] / before.shape[1]
    assert abs(float(np.linalg.norm(points[0] - points[1])) * factor - eyes) < 1.0


def test_downscaling_without_landmarks_is_refused(sample: tuple[bytes, np.ndarray]) -> None:
    with pytest.raises(ConditionError, match="landmarks"):
        condition("downscale-24px").apply(sample[0], None)


def test_greyscale_leaves_one_channel(sample: tuple[bytes, np.ndarray]) -> None:
    assert _decoded(condition("greyscale").apply(*sample)).ndim == 2


def test_jpeg2000_fits_a_chip_photos_bits_per_pixel(sample: tuple[bytes, np.ndarray]) -> None:
    data, points = sample
    encoded = condition("jpeg2000-chip").apply(data, points)
    pixels = _decoded(data).shape[0] * _decoded(data).shape[1]
    assert encoded[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    assert 0.8 * CHIP_BYTES * pixels / CHIP_PIXELS <= len(encoded) <= CHIP_BYTES * pixels / CHIP_PIXELS


def test_every_condition_changes_the_image_deterministically(sample: tuple[bytes, np.ndarray]) -> None:
    for derived in CONDITIONS.values():
        once, twice = derived.apply(*sample), derived.apply(*sample)
        assert once == twice and once != sample[0], derived.name


def test_single_studio_is_a_tight_equalised_grey_crop(sample: tuple[bytes, np.ndarray]) -> None:
    """45x60, one channel, the full grey range (equalised); the face fills it: the crop's
    centre is the face's (between the eyes and the mouth), not background."""
    studio = _decoded(condition("single-studio").apply(*sample))
    assert studio.shape == (60, 45) and studio.min() == 0 and studio.max() == 255
    with pytest.raises(ConditionError, match="landmarks"):
        condition("single-studio").apply(sample[0], None)
