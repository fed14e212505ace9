"""The passive PAD model of the fast-legacy pack, on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import with_pack
from tests.face.manifests import with_edited_manifest
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.pipeline import FaceEngine


@pytest.fixture(scope="module")
def legacy(legacy_engine: FaceEngine) -> FaceEngine:
    """The pack that names a liveness model."""
    return legacy_engine


def test_a_pack_without_a_liveness_model_cuts_no_pad_crop(engine: FaceEngine, photos: dict[str, Path]) -> None:
    assert engine.liveness is None
    assert engine.analyse_all(photos["obama.jpg"].read_bytes(), liveness=True).faces[0].liveness_crop is None


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "32bit.png"])
def test_real_photos_of_people_score_live(legacy: FaceEngine, photos: dict[str, Path], name: str) -> None:
    """Bona fide captures: a wrong colour order, class index or crop would not score them all live."""
    face = legacy.analyse_all(photos[name].read_bytes(), liveness=True).faces[0]
    assert face.liveness_crop is not None and face.liveness_crop.shape == (128, 128, 3)
    (live,) = legacy.liveness.live_probability([face.liveness_crop])
    assert 0.5 < live <= 1.0


def test_the_pad_crop_holds_the_face_with_context_on_every_side(legacy: FaceEngine, photos: dict[str, Path]) -> None:
    image = cv2.imread(str(photos["obama.jpg"]))
    box = legacy.detector.detect_batch([image])[0][0].box
    marked = image.copy()
    x1, y1, x2, y2 = (int(v) for v in box)
    cv2.rectangle(marked, (x1, y1), (x2, y2), (0, 255, 0), 3)
    crop = legacy.liveness.crop(marked, box)
    green = (crop[:, :, 1] > 200) & (crop[:, :, 0] < 80) & (crop[:, :, 2] < 80)
    rows, cols = np.flatnonzero(green.any(axis=1)), np.flatnonzero(green.any(axis=0))
    assert rows.size and cols.size
    # The box sits inside the crop with a margin: the model sees around the face.
    assert rows.min() > 10 and cols.min() > 10 and rows.max() < 117 and cols.max() < 117


def test_a_face_at_the_image_edge_gets_a_full_crop_from_inside_the_image(legacy: FaceEngine) -> None:
    image = np.full((300, 400, 3), 90, np.uint8)
    crop = legacy.liveness.crop(image, np.array([0.0, 0.0, 120.0, 150.0], np.float32))
    assert crop.shape == (128, 128, 3)


@pytest.mark.parametrize("old, new", [
    ("classes = 3, live_class = 0", "classes = 3, live_class = 3"),
    ("crop_scale = 2.7", "crop_scale = 0.0"),
])
def test_a_pad_contract_that_names_no_class_or_no_crop_is_refused_at_load(
    settings: Settings, tmp_path: Path, old: str, new: str
) -> None:
    edited = with_edited_manifest(with_pack(settings, "fast-legacy"), tmp_path, old, new)
    with pytest.raises(ModelPackError, match="live_class must be a class index and crop_scale positive"):
        FaceEngine.from_settings(edited)

