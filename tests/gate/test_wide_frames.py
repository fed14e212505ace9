"""Screen on what a gate camera sends: wide frames at their own resolution,
with the traveller's companions smaller and further back, over a real socket."""

from __future__ import annotations

from pathlib import Path

import cv2
import grpc
import numpy as np

from tests.gate.test_screen_api import _jpeg, _read, _screen, gate_channel  # noqa: F401 - the fixture
from verifier.pipeline import FaceEngine
from verifier.v1 import gate_pb2 as pb


def _placed(frame: np.ndarray, engine: FaceEngine, photo: np.ndarray, eyes: float,
            centre: tuple[float, float]) -> None:
    """Paste ``photo`` into ``frame`` scaled so its eyes are ``eyes`` px apart, its face at ``centre``."""
    face = engine.analyse(_jpeg(photo, 95)).face
    scale = eyes / float(np.linalg.norm(face.landmarks[0] - face.landmarks[1]))
    middle = face.landmarks.mean(axis=0)
    shift = np.float32([[scale, 0, centre[0] - scale * middle[0]], [0, scale, centre[1] - scale * middle[1]]])
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    placed = cv2.warpAffine(small, np.float32([[1, 0, shift[0, 2]], [0, 1, shift[1, 2]]]),
                            frame.shape[1::-1], borderValue=(0, 0, 0), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones(small.shape[:2], np.uint8), np.float32([[1, 0, shift[0, 2]], [0, 1, shift[1, 2]]]),
                          frame.shape[1::-1], flags=cv2.INTER_NEAREST)
    frame[mask > 0] = placed[mask > 0]


def _backdrop(size: tuple[int, int]) -> np.ndarray:
    width, height = size
    ramp = np.linspace(60, 180, width, dtype=np.float32)[None, :, None]
    return np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8).copy()


def test_a_watchlisted_companion_at_half_the_travellers_size_in_1080p_is_referred(
    gate_channel: grpc.Channel, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    frame = _backdrop((1920, 1080))
    _placed(frame, engine, _read(photos["obama2.jpg"]), 60.0, (800.0, 520.0))
    _placed(frame, engine, _read(photos["biden.jpg"]), 30.0, (1450.0, 400.0))
    answer = _screen(gate_channel, [_jpeg(frame)], photos["obama.jpg"].read_bytes())
    assert answer.decision == pb.REFER and "WATCHLIST_HIT" in answer.reasons, answer.reasons
    (hit,) = answer.hits
    assert (hit.watchlist, hit.subject_id) == ("wanted", "jb-1") and hit.face_index == 1
    assert answer.match, "the traveller is still recognised beside the companion"


def test_a_face_with_eyes_20_px_apart_in_a_4k_frame_is_found_and_recognised(
    gate_channel: grpc.Channel, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    frame = _backdrop((3840, 2160))
    _placed(frame, engine, _read(photos["obama2.jpg"]), 140.0, (1900.0, 1000.0))
    _placed(frame, engine, _read(photos["biden.jpg"]), 20.0, (3300.0, 300.0))
    answer = _screen(gate_channel, [_jpeg(frame)], photos["obama.jpg"].read_bytes())
    assert len(answer.faces) == 2, answer.faces
    far = answer.faces[1]
    assert 3200 < (far.box.x1 + far.box.x2) / 2 < 3400 and 200 < (far.box.y1 + far.box.y2) / 2 < 400
    assert answer.decision == pb.REFER and [h.subject_id for h in answer.hits] == ["jb-1"], answer.reasons


def test_the_travellers_score_does_not_depend_on_the_frame_size(
    gate_channel: grpc.Channel, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    """The same face, eyes 48 px apart, in a 640x480 and in a 3840x2160 frame:
    landmarks and crop come from the face's own region, so the 1:1 scores agree."""
    scores = []
    for size, centre in (((640, 480), (320.0, 240.0)), ((3840, 2160), (2900.0, 700.0))):
        frame = _backdrop(size)
        _placed(frame, engine, _read(photos["obama2.jpg"]), 48.0, centre)
        answer = _screen(gate_channel, [_jpeg(frame)], photos["obama.jpg"].read_bytes())
        assert answer.match, answer.reasons
        scores.append(answer.score)
    assert abs(scores[0] - scores[1]) < 0.03, scores
