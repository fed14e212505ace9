"""Quality components on real photos, and the per-pack utility calibration."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from verifier.config import Settings
from verifier.face.quality import RULE_COMPONENTS, QualityAssessor, quality_path
from verifier.pipeline import FaceEngine


def _assess(engine: FaceEngine, settings: Settings, image: np.ndarray):  # noqa: ANN202
    assessor = QualityAssessor.from_settings(settings, engine.embedder.utility_members)
    face = engine.analyse_all(cv2.imencode(".jpg", image)[1].tobytes()).faces[0]
    return assessor.assess(face)


def test_a_good_photo_passes_and_names_every_component(engine: FaceEngine, settings: Settings,
                                                       photos: dict[str, Path]) -> None:
    report = _assess(engine, settings, cv2.imread(str(photos["obama2.jpg"])))
    assert not report.codes
    assert tuple(c.name for c in report.components[: len(RULE_COMPONENTS)]) == RULE_COMPONENTS
    assert quality_path(settings).exists() and report.utility is not None and 0 <= report.unified <= 100


def test_blur_lowers_utility_and_sharpness(engine: FaceEngine, settings: Settings, photos: dict[str, Path]) -> None:
    image = cv2.imread(str(photos["obama2.jpg"]))
    sharp = _assess(engine, settings, image)
    blurred = _assess(engine, settings, cv2.GaussianBlur(image, (0, 0), 8))
    score = {c.name: c.score for c in blurred.components}
    assert blurred.utility < sharp.utility and score["sharpness"] < {c.name: c.score for c in sharp.components}[
        "sharpness"]
    assert blurred.unified < sharp.unified


def test_a_turned_head_asks_to_face_the_camera(engine: FaceEngine, settings: Settings,
                                               photos: dict[str, Path]) -> None:
    image = cv2.imread(str(photos["obama2.jpg"]))
    h, w = image.shape[:2]
    rolled = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), 40, 1.0), (w, h))
    assert "FACE_THE_CAMERA" in _assess(engine, settings, rolled).codes


def test_the_utility_is_each_embedders_raw_norm(engine: FaceEngine, photos: dict[str, Path]) -> None:
    from verifier.face.embedder import Embedder
    from verifier.face.fusion import FusedEmbedder

    crop = engine.analyse_all(photos["obama2.jpg"].read_bytes()).faces[0].aligned
    single = engine.embedder
    assert isinstance(single, Embedder)
    units, norms = single.embed_with_utility([crop, crop[::-1]])
    assert norms.shape == (2, 1) and np.all(norms > 1.0) and norms[0, 0] != norms[1, 0]
    np.testing.assert_allclose(np.linalg.norm(units, axis=1), 1.0, rtol=1e-5)
    fused = FusedEmbedder([single, single])
    vectors, member_norms = fused.embed_with_utility([crop])
    assert member_norms.shape == (1, 2) and fused.utility_members == (single.model_id, single.model_id)
    np.testing.assert_allclose(vectors, fused.embed([crop]), rtol=1e-6)
