"""Face image quality, modelled on ISO/IEC 29794-5, with a model-derived utility.

Two kinds of measure, for two purposes:

- **Rule components** computed honestly from pixels and the five landmarks
  (inter-eye distance, head pose, sharpness, exposure, contrast, centring and
  framing). Each is a 0-100 score with its raw value and, when it fails its
  configured bound, a code the kiosk can act on (``MOVE_CLOSER``,
  ``FACE_THE_CAMERA``, ``TOO_DARK`` ...). They explain *why* a capture is poor;
  measured on LFW dev they barely predict recognition errors.
- **Utility**: the embedder's raw output norm before L2 normalisation, mapped
  to 0-100 by its percentile among the calibration set's faces (one column
  per embedder; a fused pack averages its members' percentiles). It sees what
  pixel rules miss (sunglasses, caps, heavy blur) and is what makes the
  unified score predict errors (README: error-versus-reject characteristic).

The calibration is data, per pack: ``verifier eval --quality`` writes
``models/calibration/<pack>-quality.json``; rerun it when the pack changes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from verifier.config import QualitySettings, Settings
from verifier.errors import ModelPackError
from verifier.pipeline import FaceResult

QUALITY_SCHEMA = 1
# The rule components, in the order :meth:`QualityAssessor.components` returns them.
RULE_COMPONENTS = ("inter_eye_distance", "yaw", "pitch", "roll", "sharpness", "under_exposure", "over_exposure",
                   "dynamic_range", "in_frame", "centred")
# Percentile grid of the stored norm quantiles.
PERCENTILES = np.linspace(0.0, 100.0, 101)


@dataclass(frozen=True)
class Component:
    """One quality measure: its 0-100 score, its raw value in ``unit``, and the
    code to show when it fails (empty when it passes)."""

    name: str
    score: float
    raw: float
    unit: str
    code: str = ""


@dataclass(frozen=True)
class QualityReport:
    unified: float
    utility: float | None
    components: tuple[Component, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        """The failing components' codes, without repeats, in component order."""
        return tuple(dict.fromkeys(c.code for c in self.components if c.code))

    @property
    def acceptable(self) -> bool:
        return not self.codes


@dataclass(frozen=True)
class UtilityCalibration:
    """Norm quantiles (at :data:`PERCENTILES`) per embedder model id, measured on ``dataset``."""

    pack: str
    dataset: str
    images: int
    created: str
    members: dict[str, list[float]]
    schema: int = QUALITY_SCHEMA

    def score(self, model_ids: tuple[str, ...], norms: tuple[float, ...]) -> float:
        """0-100: the mean of each member's percentile of its norm."""
        missing = [m for m in model_ids if m not in self.members]
        if missing:
            raise ModelPackError(f"quality calibration of pack {self.pack!r} lacks {missing}: "
                                 "run `verifier eval --quality`")
        return float(np.mean([np.interp(n, self.members[m], PERCENTILES) for m, n in zip(model_ids, norms)]))


def quality_path(settings: Settings) -> Path:
    return settings.quality.calibration_file or (
        settings.matching.calibration_dir / f"{settings.models.pack}-quality.json"
    )


def write_calibration(calibration: UtilityCalibration, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(calibration), indent=1) + "\n")


def load_calibration(path: Path, model_ids: tuple[str, ...]) -> UtilityCalibration | None:
    """The pack's utility calibration; None when there is none (the unified
    score is then the rule components alone, and says so); refused when it was
    made for other models."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("schema") != QUALITY_SCHEMA:
        raise ModelPackError(f"{path}: quality calibration schema {data.get('schema')} is not {QUALITY_SCHEMA}")
    calibration = UtilityCalibration(**data)
    if set(model_ids) - set(calibration.members):
        raise ModelPackError(f"{path} was measured for {sorted(calibration.members)}, not {list(model_ids)}: "
                             "run `verifier eval --quality`")
    return calibration


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 100 at ``good``, linear between (either order)."""
    if good == bad:
        return 100.0 if value >= good else 0.0
    return float(np.clip((value - bad) / (good - bad), 0.0, 1.0) * 100.0)


def head_pose(points: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, estimated from five landmarks (eyes, nose
    tip, mouth corners) on an average frontal face: roll from the eye line,
    yaw from the nose tip's sideways offset from the eye-mouth midline, pitch
    from its height between eyes and mouth. Coarse (a few degrees), but
    monotonic, which is what a "face the camera" prompt needs."""
    left_eye, right_eye, nose, left_mouth, right_mouth = points.astype(np.float64)
    eye_vector = right_eye - left_eye
    roll = math.degrees(math.atan2(eye_vector[1], eye_vector[0]))
    rotation = np.array([[math.cos(-math.radians(roll)), -math.sin(-math.radians(roll))],
                         [math.sin(-math.radians(roll)), math.cos(-math.radians(roll))]])
    eye_mid = (left_eye + right_eye) / 2
    mouth_mid = (left_mouth + right_mouth) / 2
    centre_line = rotation @ ((eye_mid + mouth_mid) / 2 - eye_mid)
    nose_offset = rotation @ (nose - eye_mid) - centre_line
    mouth_offset = rotation @ (mouth_mid - eye_mid)
    eye_distance = max(float(np.linalg.norm(eye_vector)), 1e-6)
    # A frontal nose tip sits on the midline, about 0.55 of the way from the
    # eyes to the mouth; a sideways offset of half the eye distance is ~45 degrees.
    yaw = math.degrees(math.asin(float(np.clip(nose_offset[0] / eye_distance * 1.4, -1.0, 1.0))))
    depth = max(float(mouth_offset[1]), 1e-6)
    pitch = math.degrees(math.asin(float(np.clip((nose_offset[1] + centre_line[1]) / depth - 0.55, -1.0, 1.0))))
    return yaw, pitch, roll


def _luminance(crop: np.ndarray) -> np.ndarray:
    """The central face region of an aligned crop, as luminance (eyes to chin,
    cheek to cheek: background and hair are excluded)."""
    size = crop.shape[0]
    lo, hi = int(size * 0.2), int(size * 0.85)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[lo:hi, int(size * 0.18):int(size * 0.82)]


class QualityAssessor:
    """Scores one face; holds the configured bounds and the pack's utility calibration."""

    def __init__(self, settings: QualitySettings, calibration: UtilityCalibration | None,
                 utility_members: tuple[str, ...]) -> None:
        self.settings = settings
        self.calibration = calibration
        self.members = utility_members

    @classmethod
    def from_settings(cls, settings: Settings, utility_members: tuple[str, ...]) -> "QualityAssessor":
        return cls(settings.quality, load_calibration(quality_path(settings), utility_members), utility_members)

    def assess(self, face: FaceResult) -> QualityReport:
        """Every component of ``face`` and the unified score."""
        components = self.components(face)
        utility = None
        if self.calibration is not None and face.utility:
            utility = self.calibration.score(self.members, face.utility)
            # Rules passing but the embedder finding the face hard to use: an
            # occlusion (sunglasses, a cap, a hand) the pixels do not show.
            components += (Component("utility", round(utility, 1), round(face.utility[0], 3), "embedding norm",
                                     "LOW_UTILITY" if utility < self.settings.min_utility else ""),)
        return QualityReport(self.unified(components, utility), utility, components)

    def unified(self, components: tuple[Component, ...], utility: float | None) -> float:
        """The weighted mean of the utility (when calibrated) and the mean rule score."""
        rules = float(np.mean([c.score for c in components if c.name != "utility"]))
        if utility is None:
            return rules
        weight = self.settings.utility_weight
        return weight * utility + (1.0 - weight) * rules

    def components(self, face: FaceResult) -> tuple[Component, ...]:
        s = self.settings
        points = face.face.landmarks
        eye_distance = float(np.linalg.norm(points[1] - points[0]))
        yaw, pitch, roll = head_pose(points)
        crop = face.aligned if face.aligned is not None else np.zeros((112, 112, 3), np.uint8)
        luminance = _luminance(crop)
        mean = float(luminance.mean())
        spread = float(np.percentile(luminance, 95) - np.percentile(luminance, 5))
        sharpness = float(cv2.Laplacian(cv2.GaussianBlur(luminance, (3, 3), 0), cv2.CV_64F).var())
        width, height = face.image_size
        box = face.face.box
        margin = min(box[0], box[1], width - box[2], height - box[3]) / max(box[2] - box[0], 1e-6)
        centre_offset = float(np.hypot((box[0] + box[2]) / 2 / max(width, 1) - 0.5,
                                       (box[1] + box[3]) / 2 / max(height, 1) - 0.5))

        def check(name: str, score: float, raw: float, unit: str, failing: bool, code: str) -> Component:
            return Component(name, round(score, 1), round(raw, 3), unit, code if failing else "")

        return (
            check("inter_eye_distance", _ramp(eye_distance, 0.0, s.good_inter_eye_px), eye_distance, "px",
                  eye_distance < s.min_inter_eye_px, "MOVE_CLOSER"),
            check("yaw", _ramp(abs(yaw), 45.0, 0.0), yaw, "deg", abs(yaw) > s.max_yaw_deg, "FACE_THE_CAMERA"),
            check("pitch", _ramp(abs(pitch), 45.0, 0.0), pitch, "deg", abs(pitch) > s.max_pitch_deg,
                  "FACE_THE_CAMERA"),
            check("roll", _ramp(abs(roll), 45.0, 0.0), roll, "deg", abs(roll) > s.max_roll_deg, "FACE_THE_CAMERA"),
            check("sharpness", _ramp(math.log1p(sharpness), 0.0, math.log1p(s.good_sharpness)), sharpness,
                  "laplacian variance", sharpness < s.min_sharpness, "HOLD_STILL"),
            check("under_exposure", _ramp(mean, 0.0, s.min_mean_luminance * 2), mean, "mean grey",
                  mean < s.min_mean_luminance, "TOO_DARK"),
            check("over_exposure", _ramp(mean, 255.0, s.max_mean_luminance - 40), mean, "mean grey",
                  mean > s.max_mean_luminance, "TOO_BRIGHT"),
            check("dynamic_range", _ramp(spread, 0.0, s.min_dynamic_range * 2), spread, "grey levels p5-p95",
                  spread < s.min_dynamic_range, "IMPROVE_LIGHTING"),
            check("in_frame", _ramp(margin, -0.2, 0.1), margin, "margin / face width",
                  margin < s.min_frame_margin, "STEP_TO_CENTRE"),
            check("centred", _ramp(centre_offset, 0.5, 0.1), centre_offset, "offset / image",
                  centre_offset > s.max_centre_offset, "STEP_TO_CENTRE"),
        )
