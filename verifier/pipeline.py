"""The face engine: image bytes to one face with its template, stage by stage.

Detection runs once per image; the chosen face goes to landmarks, alignment and
the embedder. Several images arriving together (a probe and its reference, an
enrolment batch) share each model run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from verifier import deadlines
from verifier.config import Settings
from verifier.errors import ModelPackError, Reason, VerifierError
from verifier.face.align import align
from verifier.face.detector import Detection, FaceDetector, detector_for
from verifier.face.embedder import Embedder
from verifier.face.fusion import FusedEmbedder
from verifier.face.landmarks import LandmarkModel
from verifier.imaging import DecodedImage, decode
from verifier.modelzoo.fetch import model_path, sha256_of
from verifier.modelzoo.manifest import ModelSpec, load_manifest
from verifier.modelzoo.session import ModelRunner, Occupancy
from verifier.templates import Template, TemplateSpec

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "landmarks", "align", "embed")
# Bump when a change to pre- or post-processing changes templates: caches of
# templates (the evaluation's) key on it, as they key on model ids and settings.
PIPELINE_REVISION = 4


class Selection(Enum):
    """Which face to take when an image holds several."""

    LARGEST = "largest"  # the traveller nearest the camera
    CENTRE = "centre"  # the labelled face of an LFW-style photo


@dataclass(frozen=True)
class FaceInfo:
    """Where the chosen face is, in the pixels of the image as sent."""

    box: np.ndarray
    detection_score: float
    landmarks: np.ndarray


@dataclass(frozen=True)
class FaceResult:
    face: FaceInfo
    faces_detected: int
    template: Template
    timings_ms: dict[str, float] = field(default_factory=dict)


class _Stopwatch:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {stage: 0.0 for stage in STAGES}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - start) * 1000.0


def _choose(detections: list[Detection], image: DecodedImage, selection: Selection) -> Detection:
    if selection is Selection.LARGEST:
        return max(detections, key=lambda d: d.area)
    centre = np.array(image.bgr.shape[1::-1], dtype=np.float32) / 2
    return min(detections, key=lambda d: float(np.sum(((d.box[:2] + d.box[2:]) / 2 - centre) ** 2)))


def _verified_model(spec: ModelSpec, settings: Settings) -> Path:
    path = model_path(settings.models.cache_dir, spec)
    if not path.exists():
        raise ModelPackError(f"{path} is missing: run `verifier models fetch`")
    if sha256_of(path) != spec.prepared_sha256:
        raise ModelPackError(f"{path} does not match its pinned sha256: run `verifier models fetch`")
    return path


def _accepted(members: dict[str, tuple[ModelSpec, ...]], settings: Settings) -> None:
    """Refuse a pack holding a model whose licence the deployer has not accepted,
    and log every model's licence, so the record of a start says what was run."""
    for specs in members.values():
        for spec in specs:
            token = spec.requires_acceptance
            if token and token not in settings.models.accept_licences:
                raise ModelPackError(
                    f"pack {settings.models.pack!r} holds {spec.name}, licensed: {spec.licence}. "
                    f"It loads only when models.accept_licences lists {token!r}"
                )
            log.info("model %s (%s): licence: %s", spec.model_id, spec.task, spec.licence)


class FaceEngine:
    """Detector, landmarks and embedder of one model pack, shared by all requests
    (ONNX Runtime sessions are safe to run from several threads). ``landmarks``
    is None where the detector gives the five points itself."""

    def __init__(
        self,
        settings: Settings,
        detector: FaceDetector,
        landmarks: LandmarkModel | None,
        embedder: Embedder | FusedEmbedder,
        occupancy: Occupancy | None = None,
    ) -> None:
        if landmarks is None and not detector.gives_landmarks:
            raise ModelPackError(f"detector {detector.spec.name} gives no landmarks and the pack names no landmark model")
        self.settings = settings
        self.detector = detector
        self.landmarks = landmarks
        self.embedder = embedder
        self.occupancy = occupancy or Occupancy()

    @classmethod
    def from_settings(cls, settings: Settings) -> "FaceEngine":
        """Load the configured pack, refusing missing or altered model files and
        licences not accepted."""
        members = load_manifest(settings.models.manifest).members(settings.models.pack)
        _accepted(members, settings)
        (detector,) = members["detector"]

        occupancy = Occupancy()

        def session(spec: ModelSpec) -> ModelRunner:
            return ModelRunner(_verified_model(spec, settings), settings.models, occupancy)

        landmarks = None
        if "landmarks" in members:
            (spec,) = members["landmarks"]
            landmarks = LandmarkModel(spec, session(spec), settings.pipeline.landmark_crop_scale)
        embedders = [Embedder(spec, session(spec), settings.pipeline.embed_mirror) for spec in members["embedder"]]
        return cls(
            settings,
            detector_for(detector, session(detector), settings.detector),
            landmarks,
            embedders[0] if len(embedders) == 1 else FusedEmbedder(embedders),
            occupancy,
        )

    def five_points(self, faces: list[tuple[np.ndarray, Detection]]) -> list[np.ndarray]:
        """Five landmarks per (image, detection): the landmark model's where the
        pack has one, else the detector's own."""
        if self.landmarks is not None:
            return self.landmarks.five_points([(bgr, detection.box) for bgr, detection in faces])
        return [detection.landmarks for _, detection in faces]  # type: ignore[misc]

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def template_spec(self) -> TemplateSpec:
        """The model id and dimension every template compared or stored must have."""
        return TemplateSpec(self.embedder.model_id, self.embedder.dimension)

    def analyse(self, data: bytes, selection: Selection = Selection.LARGEST) -> FaceResult:
        """One image to its chosen face and template; raises on bad input or no face."""
        result = self.analyse_batch([data], selection)[0]
        if isinstance(result, VerifierError):
            raise result
        return result

    def analyse_batch(
        self, images: list[bytes], selection: Selection = Selection.LARGEST
    ) -> list[FaceResult | VerifierError]:
        """Each image to a face result or the error that stopped it; model runs are
        batched across the images, and timings are those of the whole batch."""
        with self.occupancy:
            return self._analyse(images, selection)

    def _analyse(self, images: list[bytes], selection: Selection) -> list[FaceResult | VerifierError]:
        clock = _Stopwatch()
        outcomes: list[FaceResult | VerifierError | None] = [None] * len(images)
        decoded: dict[int, DecodedImage] = {}
        with clock.stage("decode"):
            for i, data in enumerate(images):
                deadlines.check("decode")
                try:
                    decoded[i] = decode(data, self.settings.imaging)
                except VerifierError as exc:
                    outcomes[i] = exc
        order = list(decoded)
        if order:
            deadlines.check("detect")
        with clock.stage("detect"):
            found = self.detector.detect_batch([decoded[i].bgr for i in order]) if order else []
        chosen: dict[int, tuple[Detection, int]] = {}
        min_side = self.settings.detector.min_face_px
        for i, detections in zip(order, found):
            scale = decoded[i].scale
            usable = [d for d in detections if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) / scale >= min_side]
            if not usable:
                outcomes[i] = VerifierError(Reason.NO_FACE, "no face found in the image", faces_detected=len(detections))
                continue
            chosen[i] = (_choose(usable, decoded[i], selection), len(usable))
        keys = list(chosen)
        with clock.stage("landmarks"):
            points = self.five_points([(decoded[i].bgr, chosen[i][0]) for i in keys])
        aligned: list[tuple[int, np.ndarray, np.ndarray]] = []
        floor = self.settings.detector.min_eye_distance_px
        with clock.stage("align"):
            for i, face_points in zip(keys, points):
                eyes = float(np.linalg.norm(face_points[0] - face_points[1])) / decoded[i].scale
                if eyes < floor:
                    outcomes[i] = VerifierError(
                        Reason.FACE_TOO_SMALL,
                        f"the eyes are {eyes:.1f} px apart, below the {floor:g} px the threshold was measured at: "
                        "capture closer or at a higher resolution",
                        eye_distance_px=f"{eyes:.1f}", min_eye_distance_px=f"{floor:g}",
                    )
                    continue
                try:
                    aligned.append((i, face_points, align(decoded[i].bgr, face_points, self.embedder.input_size)))
                except VerifierError as exc:
                    outcomes[i] = exc
        if aligned:
            deadlines.check("embed")
        with clock.stage("embed"):
            vectors = self.embedder.embed([crop for _, _, crop in aligned])
        for (i, face_points, _), vector in zip(aligned, vectors):
            image, (detection, count) = decoded[i], chosen[i]
            outcomes[i] = FaceResult(
                face=FaceInfo(
                    box=image.to_original(detection.box),
                    detection_score=detection.score,
                    landmarks=image.to_original(face_points),
                ),
                faces_detected=count,
                template=Template(model_id=self.model_id, vector=vector),
                timings_ms=dict(clock.ms),
            )
        return [outcome for outcome in outcomes if outcome is not None]

    def embed_with_landmarks(self, images: list[bytes], points: list[np.ndarray]) -> list[Template | VerifierError]:
        """Templates from given five points (original pixels) instead of detected ones,
        to measure the embedder alone on a set with published landmarks."""
        outcomes: dict[int, Template | VerifierError] = {}
        crops: dict[int, np.ndarray] = {}
        for i, (data, face_points) in enumerate(zip(images, points, strict=True)):
            try:
                image = decode(data, self.settings.imaging)
                crops[i] = align(image.bgr, face_points * image.scale, self.embedder.input_size)
            except VerifierError as exc:
                outcomes[i] = exc
        for i, vector in zip(crops, self.embedder.embed(list(crops.values()))):
            outcomes[i] = Template(model_id=self.model_id, vector=vector)
        return [outcomes[i] for i in range(len(images))]
