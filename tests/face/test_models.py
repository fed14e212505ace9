"""Detector, landmarks and embedder classes on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.face.manifests import with_edited_manifest
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.face.align import align
from verifier.face.detector import FaceDetector, detector_for
from verifier.modelzoo.manifest import load_manifest
from verifier.modelzoo.runtime import BF16
from verifier.pipeline import FaceEngine

DETECTORS = ("ultralight-rfb-320", "yunet-2023mar", "retinaface-mnet025")


@pytest.fixture(scope="module")
def obama(photos: dict[str, Path]) -> np.ndarray:
    return cv2.imread(str(photos["obama.jpg"]))


@pytest.fixture(scope="module")
def legacy(legacy_engine: FaceEngine) -> FaceEngine:
    """The pack with a separate landmark model."""
    return legacy_engine


def _detector(name: str, settings: Settings, **changes: object) -> FaceDetector:
    from verifier.modelzoo.fetch import model_path
    from verifier.modelzoo.session import create_session

    spec = load_manifest(settings.models.manifest).models[name]
    session = create_session(model_path(settings.models.cache_dir, spec), settings.models)
    return detector_for(spec, session, settings.detector.model_copy(update=changes))


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_finds_one_face_with_or_without_letterbox(name: str, settings: Settings, obama: np.ndarray) -> None:
    boxes = []
    for letterbox in (True, False):
        (found,) = _detector(name, settings, letterbox=letterbox).detect_batch([obama])
        found = [d for d in found if d.score >= settings.detector.min_score]  # the rest: candidates to confirm
        assert len(found) == 1 and found[0].score > 0.9
        boxes.append(found[0].box)
    overlap_x = min(boxes[0][2], boxes[1][2]) - max(boxes[0][0], boxes[1][0])
    assert overlap_x > 0.7 * (boxes[0][2] - boxes[0][0])


@pytest.mark.parametrize("name", DETECTORS)
def test_a_small_face_in_a_wide_frame_is_found_in_whole_frame_pixels(
    name: str, settings: Settings, obama: np.ndarray
) -> None:
    """A face with eyes 18 px apart in a 1920x1080 frame, far too small for the
    detector's input when the whole frame is fitted into it, is found by the
    fine pass (one input where the graph takes any size, tiles where it does
    not), with its box where the face was put, in the frame's pixels."""
    detector = _detector(name, settings)
    (face,) = _detector("retinaface-mnet025", settings).detect_batch([obama])[0]
    x1, y1, x2, y2 = face.box
    assert face.landmarks is not None
    scale = 18.0 / float(np.linalg.norm(face.landmarks[0] - face.landmarks[1]))
    centre = np.float32([1500.0, 260.0])
    shift = np.float32([[scale, 0, centre[0] - scale * (x1 + x2) / 2], [0, scale, centre[1] - scale * (y1 + y2) / 2]])
    frame = cv2.warpAffine(obama, shift, (1920, 1080), flags=cv2.INTER_AREA, borderValue=(100, 100, 100))
    coarse = detector.settings.model_copy(update={"max_input_pixels": 76_800})
    (seen,) = detector_for(detector.spec, detector.session, coarse).detect_batch([frame])
    assert not [d for d in seen if d.score >= settings.detector.min_score]
    found = [d for d in detector.detect_batch([frame])[0] if d.score >= settings.detector.min_score]
    assert len(found) == 1
    box = found[0].box
    assert np.allclose((box[:2] + box[2:]) / 2, centre, atol=0.15 * (box[2] - box[0]) + 2)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_finds_nothing_in_a_wall(name: str, settings: Settings, obama: np.ndarray) -> None:
    wall = obama[:60, :60].copy().repeat(8, 0).repeat(8, 1)
    assert _detector(name, settings).detect_batch([wall]) == [[]]


@pytest.mark.parametrize("name", ["yunet-2023mar", "retinaface-mnet025"])
def test_detector_landmarks_agree_with_the_landmark_model(
    name: str, settings: Settings, legacy: FaceEngine, photos: dict[str, Path]
) -> None:
    """Five points in the template's order (image-left eye first), inside the box, and
    within a quarter of the eye distance of the separate landmark model's (itself
    a few pixels off on these photos; a decoding error is off by whole cells)."""
    for photo in ("obama.jpg", "biden.jpg"):
        image = cv2.imread(str(photos[photo]))
        (face,) = _detector(name, settings).detect_batch([image])[0]
        points = face.landmarks
        assert points is not None and points.shape == (5, 2)
        x1, y1, x2, y2 = face.box
        assert np.all((points >= [x1, y1]) & (points <= [x2, y2]))
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]
        assert points[:2, 1].max() < points[2, 1] < points[3:, 1].min()
        (look,) = legacy.second_look([(image, legacy.detector.detect_batch([image])[0][0])])
        reference = look.region.to_image(look.points)
        eyes = float(np.linalg.norm(reference[0] - reference[1]))
        assert float(np.max(np.linalg.norm(points - reference, axis=1))) < 0.25 * eyes, photo


def test_a_pack_whose_detector_gives_no_landmarks_needs_a_landmark_model(settings: Settings, tmp_path: Path) -> None:
    local = with_edited_manifest(
        settings, tmp_path,
        'detector = "retinaface-mnet025"\nembedder = "sface-128"', 'detector = "ultralight-rfb-320"\nembedder = "sface-128"',
    )
    with pytest.raises(ModelPackError, match="gives no landmarks"):
        FaceEngine.from_settings(local)


def test_the_default_pack_runs_no_landmark_model(engine: FaceEngine) -> None:
    assert engine.landmarks is None and engine.detector.gives_landmarks


def test_landmarks_batch_equals_single(legacy: FaceEngine, obama: np.ndarray, photos: dict[str, Path]) -> None:
    biden = cv2.imread(str(photos["biden.jpg"]))
    assert legacy.landmarks is not None
    faces = [(img, legacy.detector.detect_batch([img])[0][0].box) for img in (obama, biden)]
    together = legacy.landmarks.five_points(faces)
    apart = [legacy.landmarks.five_points([face])[0] for face in faces]
    assert np.allclose(together, apart, atol=1e-3)


def test_embedder_batches_and_mirrors(engine: FaceEngine, obama: np.ndarray) -> None:
    (look,) = engine.second_look([(obama, engine.detector.detect_batch([obama])[0][0])])
    crop = align(look.region.pixels, look.points)
    single = engine.embedder.embed([crop])
    double = engine.embedder.embed([crop, crop[:, ::-1].copy()])
    dimension = engine.embedder.dimension
    assert single.shape == (1, dimension)
    if engine.operating_point.precision == BF16:
        # Each batch size runs its own compiled graph (verifier.modelzoo.runtime),
        # and bf16 rounds differently in each: the same face, not the same bits.
        assert float(double[0] @ single[0]) > 0.999
    else:
        assert np.allclose(double[0], single[0], atol=1e-5)
    assert 0.7 < float(double[0] @ double[1]) < 0.9999
    assert engine.embedder.embed([]).shape == (0, dimension)


def test_the_fine_pass_is_bounded_and_says_where_its_floor_rises(
    engine: FaceEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A 640x480 frame is looked at where eyes 16 px apart span 12 input px; a
    portrait the coarse pass already sees large enough gets no fine pass; a
    4096x3072 frame would need more than ``max_input_pixels`` and is looked at
    more coarsely, once logged with the eye distance still promised."""
    detector = engine.detector
    assert detector.fine_scale((480, 640)) == pytest.approx(0.75)
    assert detector.fine_scale((250, 250)) is None
    with caplog.at_level("WARNING"):
        scale = detector.fine_scale((3072, 4096))
        detector.fine_scale((3072, 4096))
    assert scale == pytest.approx(np.sqrt(detector.settings.max_input_pixels / (4096 * 3072)))
    warned = [r.getMessage() for r in caplog.records if "max_input_pixels" in r.getMessage()]
    assert len(warned) == 1 and "19 px" in warned[0], warned
