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
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import numpy as np

from verifier import deadlines
from verifier.calibration import operating_point
from verifier.config import Settings
from verifier.errors import ModelPackError, Reason, VerifierError
from verifier.face.align import align
from verifier.face.detector import Detection, FaceDetector, detector_for
from verifier.face.embedder import Embedder
from verifier.face.fusion import FusedEmbedder
from verifier.face.landmarks import LandmarkModel
from verifier.face.liveness import LivenessModel
from verifier.face.region import FaceRegion, cut_region
from verifier.imaging import DecodedImage, ImageDecoder, ImageUse
from verifier.modelzoo.fetch import model_path, sha256_of
from verifier.modelzoo.manifest import ModelSpec, load_manifest
from verifier.modelzoo.runtime import DEFAULT_POINT, OperatingPoint, cpu_features
from verifier.modelzoo.session import ModelRunner, Occupancy
from verifier.templates import Template, TemplateSpec

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "landmarks", "align", "embed")
# Bump when a change to pre- or post-processing changes templates: caches of
# templates (the evaluation's) key on it, as they key on model ids and settings.
PIPELINE_REVISION = 8


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
    # The embedder's raw output norm(s) before normalising, one per embedder
    # of the pack: the model-derived utility signal (verifier.face.quality).
    utility: tuple[float, ...] = ()
    # The aligned crop the template was made from, and the size (width,
    # height) of the image as sent: what pixel-level quality and replay
    # checks look at.
    aligned: np.ndarray | None = field(default=None, repr=False, compare=False)
    image_size: tuple[int, int] = (0, 0)
    # The face with its context at the PAD model's input, where the pack has one.
    liveness_crop: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class FrameFaces:
    """Every usable face of one image (largest first), for a gate that must
    search everyone in front of it, not only the traveller."""

    faces: list[FaceResult]
    faces_detected: int
    image_size: tuple[int, int]
    timings_ms: dict[str, float]


# A face of the second look is the first look's when their boxes overlap this much.
_SAME_FACE_IOU = 0.3
# The directions (x, y) of the averaged looks' shifts, in the order taken:
# detector.region_jitter_looks of them.
_JITTER_DIRECTIONS = ((1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    height = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = width * height
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Look:
    """A face's second look: its region, the box and five points in the region's
    pixels, and whether a look found the face there at ``detector.min_score``."""

    region: FaceRegion
    box: np.ndarray
    points: np.ndarray | None
    confirmed: bool


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
    is None where the detector gives the five points itself; ``liveness`` (a
    PAD model) is None where the pack names none."""

    def __init__(
        self,
        settings: Settings,
        detector: FaceDetector,
        landmarks: LandmarkModel | None,
        embedder: Embedder | FusedEmbedder,
        occupancy: Occupancy | None = None,
        liveness: LivenessModel | None = None,
        operating_point: OperatingPoint | None = None,
    ) -> None:
        if landmarks is None and not detector.gives_landmarks:
            raise ModelPackError(f"detector {detector.spec.name} gives no landmarks and the pack names no landmark model")
        self.settings = settings
        self.detector = detector
        self.landmarks = landmarks
        self.embedder = embedder
        self.liveness = liveness
        self.occupancy = occupancy or Occupancy()
        self.operating_point = operating_point or DEFAULT_POINT
        self.decoder = ImageDecoder(settings.imaging)

    @classmethod
    def from_settings(cls, settings: Settings) -> "FaceEngine":
        """Load the configured pack, refusing missing or altered model files and
        licences not accepted."""
        members = load_manifest(settings.models.manifest).members(settings.models.pack)
        _accepted(members, settings)
        (detector,) = members["detector"]

        occupancy = Occupancy()
        point = operating_point(settings)
        log.info("models run on %s (processor features: %s)", point, " ".join(cpu_features()) or "none found")

        def session(spec: ModelSpec) -> ModelRunner:
            return ModelRunner(_verified_model(spec, settings), settings.models, occupancy, point)

        landmarks = None
        if "landmarks" in members:
            (spec,) = members["landmarks"]
            landmarks = LandmarkModel(spec, session(spec), settings.pipeline.landmark_crop_scale)
        embedders = [Embedder(spec, session(spec), settings.pipeline.embed_mirror) for spec in members["embedder"]]
        liveness = None
        if "liveness" in members:
            (spec,) = members["liveness"]
            liveness = LivenessModel(spec, session(spec))
        return cls(
            settings,
            detector_for(detector, session(detector), settings.detector),
            landmarks,
            embedders[0] if len(embedders) == 1 else FusedEmbedder(embedders),
            occupancy,
            liveness,
            point,
        )

    def second_look(self, faces: list[tuple[np.ndarray, Detection]]) -> list[Look]:
        """Each (image, detection)'s region cut from the image at the detector's
        input size (verifier.face.region), looked at again there: the box and
        five points of the face found in it, from the landmark model where the
        pack has one. The look is repeated ``detector.region_looks`` times, each
        region centred on the box the last one found: the first look's box
        depends on the frame (which pass found it, at what scale), and the
        repetition brings a face to the same region whatever frame it came in.
        Where a look finds no face overlapping the last (rare: a face at the
        detection threshold), the last box and points stand and ``confirmed``
        stays False: the caller drops such a face only where the detector
        itself scored it under ``min_score`` (a fine-pass candidate). The last
        look's points are then averaged with those of looks at shifted regions
        (:meth:`_averaged`)."""
        looks: list[Look] = []
        for _ in range(self.settings.detector.region_looks):
            if looks:
                faces = [(bgr, self._at(look, detection.score, np.zeros(4, np.float32)))
                         for (bgr, detection), look in zip(faces, looks)]
            again = self._look(faces)
            looks = [replace(new, confirmed=new.confirmed or old.confirmed) for new, old in zip(again, looks)] \
                if looks else again
        return self._averaged(faces, looks)

    @staticmethod
    def _at(look: Look, score: float, shift: np.ndarray) -> Detection:
        """``look``'s box and points in image pixels, the box moved by ``shift`` (x1, y1, x2, y2)."""
        return Detection(look.region.to_image(look.box) + shift, score,
                         None if look.points is None else look.region.to_image(look.points))

    def _averaged(self, faces: list[tuple[np.ndarray, Detection]], looks: list[Look]) -> list[Look]:
        """``looks`` with their points replaced by the mean, in image pixels,
        of their own and those of ``detector.region_jitter_looks`` looks at
        regions shifted diagonally about their box (those that found the face).
        The landmark stage is not equivariant to where its input is cut: one
        look's points move by a pixel or two when its region moves by a few,
        which moves the template; the mean over shifted regions varies far
        less with the region the looks began from."""
        detector = self.settings.detector
        directions = _JITTER_DIRECTIONS[:detector.region_jitter_looks]
        if not directions or not looks:
            return looks
        shifted = []
        for (bgr, detection), look in zip(faces, looks):
            x1, y1, x2, y2 = look.region.to_image(look.box)
            step = detector.region_jitter * np.array([x2 - x1, y2 - y1], np.float32)
            shifted += [(bgr, self._at(look, detection.score, np.tile(step * direction, 2).astype(np.float32)))
                        for direction in directions]
        found = self._look(shifted)
        averaged = []
        for k, look in enumerate(looks):
            own = found[k * len(directions):(k + 1) * len(directions)]
            if look.points is None:
                averaged.append(look)
                continue
            points = [look.region.to_image(look.points)] + [
                other.region.to_image(other.points) for other in own if other.confirmed and other.points is not None]
            averaged.append(replace(look, points=look.region.from_image(np.mean(points, axis=0))))
        return averaged

    def _look(self, faces: list[tuple[np.ndarray, Detection]]) -> list[Look]:
        if not faces:
            return []
        context = self.settings.detector.region_context
        regions = [cut_region(bgr, detection.box, self.detector.input_size, context, self.detector.fill)
                   for bgr, detection in faces]
        found = self.detector.detect_inputs([region.pixels for region in regions])
        looks = []
        for region, (_, detection), candidates in zip(regions, faces, found):
            expected = region.from_image(detection.box)
            overlaps = [(_iou(expected, c.box), c) for c in candidates]
            best = max(overlaps, key=lambda item: item[0], default=(0.0, None))
            again = best[1] if best[0] >= _SAME_FACE_IOU else None
            box = expected if again is None else again.box
            points = None
            if self.landmarks is None:
                points = region.from_image(detection.landmarks) if again is None else again.landmarks
            looks.append(Look(region, box, points, again is not None))
        if self.landmarks is not None:
            points = self.landmarks.five_points([(look.region.pixels, look.box) for look in looks])
            looks = [replace(look, points=p) for look, p in zip(looks, points)]
        return looks

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def template_spec(self) -> TemplateSpec:
        """The model id and dimension every template compared or stored must have."""
        return TemplateSpec(self.embedder.model_id, self.embedder.dimension)

    def analyse(
        self, data: bytes, selection: Selection = Selection.LARGEST, use: ImageUse = ImageUse.LIVE
    ) -> FaceResult:
        """One image to its chosen face and template; raises on bad input or no face.
        ``use`` chooses the image's size limits (a live capture unless said)."""
        result = self.analyse_batch([data], selection, use)[0]
        if isinstance(result, VerifierError):
            raise result
        return result

    def analyse_batch(
        self, images: list[bytes], selection: Selection = Selection.LARGEST, use: ImageUse = ImageUse.LIVE
    ) -> list[FaceResult | VerifierError]:
        """Each image to a face result or the error that stopped it; model runs are
        batched across the images, and timings are those of the whole batch.
        Boxes and landmarks are in the upright (EXIF-applied) frame of each image."""
        with self.occupancy:
            outcomes = self._analyse(images, selection, use)
        return [o if isinstance(o, VerifierError) else o.faces[0] for o in outcomes]

    def analyse_all(self, data: bytes, use: ImageUse = ImageUse.LIVE, liveness: bool = False) -> FrameFaces:
        """Every face of one image at or above the minimum size, largest first,
        each with its template; landmarks and embedder run once over all of
        them. Raises on bad input or when there is no usable face.
        ``liveness``: also each face's crop for the pack's PAD model, where it
        has one."""
        with self.occupancy:
            (outcome,) = self._analyse([data], None, use, liveness)
        if isinstance(outcome, VerifierError):
            raise outcome
        return outcome

    def _analyse(
        self, images: list[bytes], selection: Selection | None, use: ImageUse, liveness: bool = False,
    ) -> list[FrameFaces | VerifierError]:
        """``selection`` None: every usable face, largest first; else the one it picks.
        ``liveness``: also cut each face's crop for the pack's PAD model, if it has one."""
        pad = self.liveness if liveness else None
        clock = _Stopwatch()
        outcomes: list[FrameFaces | VerifierError | None] = [None] * len(images)
        decoded: dict[int, DecodedImage] = {}
        with clock.stage("decode"):
            for i, data in enumerate(images):
                deadlines.check("decode")
                try:
                    decoded[i] = self.decoder.decode(data, use)
                except VerifierError as exc:
                    outcomes[i] = exc
        order = list(decoded)
        if order:
            deadlines.check("detect")
        with clock.stage("detect"):
            found = self.detector.detect_batch([decoded[i].bgr for i in order], [decoded[i].scale for i in order])
        # (image, detection) for every face that goes on, and faces usable per image.
        chosen: list[tuple[int, Detection]] = []
        usable_count: dict[int, int] = {}
        min_side = self.settings.detector.min_face_px
        for i, detections in zip(order, found):
            scale = decoded[i].scale
            usable = [d for d in detections if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) / scale >= min_side]
            if not usable:
                outcomes[i] = VerifierError(Reason.NO_FACE, "no face found in the image", faces_detected=len(detections))
                continue
            usable_count[i] = len(usable)
            if selection is None:
                chosen += [(i, d) for d in sorted(usable, key=lambda d: d.area, reverse=True)]
            else:
                sure = [d for d in usable if d.score >= self.settings.detector.min_score]
                chosen.append((i, _choose(sure or usable, decoded[i], selection)))
        with clock.stage("landmarks"):
            looks = self.second_look([(decoded[i].bgr, detection) for i, detection in chosen])
        aligned: list[tuple[int, Detection, Look, np.ndarray]] = []
        too_small: dict[int, VerifierError] = {}
        floor = self.settings.detector.min_eye_distance_px
        with clock.stage("align"):
            for (i, detection), look in zip(chosen, looks):
                if not look.confirmed and detection.score < self.settings.detector.min_score:
                    usable_count[i] -= 1  # a fine-pass candidate the second look did not find: no face
                    continue
                face_points = look.points
                eyes = float(np.linalg.norm(face_points[0] - face_points[1])) / look.region.scale / decoded[i].scale
                if eyes < floor:
                    too_small[i] = VerifierError(
                        Reason.FACE_TOO_SMALL,
                        f"the eyes are {eyes:.1f} px apart, below the {floor:g} px the threshold was measured at: "
                        "capture closer or at a higher resolution",
                        eye_distance_px=f"{eyes:.1f}", min_eye_distance_px=f"{floor:g}",
                    )
                    continue
                try:
                    crop = align(decoded[i].bgr, look.region.to_image(face_points), self.embedder.input_size)
                except VerifierError as exc:
                    if selection is not None:
                        outcomes[i] = exc
                    continue
                aligned.append((i, detection, look, crop))
        if aligned:
            deadlines.check("embed")
        with clock.stage("embed"):
            vectors, norms = self.embedder.embed_with_utility([crop for *_, crop in aligned])
        faces: dict[int, list[FaceResult]] = {}
        for (i, detection, look, crop), vector, norm in zip(aligned, vectors, norms):
            image = decoded[i]
            box = look.region.to_image(look.box)
            faces.setdefault(i, []).append(FaceResult(
                face=FaceInfo(
                    box=image.to_original(box),
                    detection_score=detection.score,
                    landmarks=image.to_original(look.region.to_image(look.points)),
                ),
                faces_detected=usable_count[i],
                template=Template(model_id=self.model_id, vector=vector),
                timings_ms=dict(clock.ms),
                utility=tuple(float(n) for n in norm),
                aligned=crop,
                image_size=(image.original_width, image.original_height),
                liveness_crop=None if pad is None else pad.crop(image.bgr, box),
            ))
        for i in usable_count:
            if outcomes[i] is None:
                if i in faces:
                    size = faces[i][0].image_size
                    outcomes[i] = FrameFaces(faces[i], usable_count[i], size, dict(clock.ms))
                elif usable_count[i] == 0:
                    outcomes[i] = VerifierError(Reason.NO_FACE, "no face found in the image", faces_detected=0)
                else:
                    outcomes[i] = too_small.get(i) or VerifierError(
                        Reason.NO_FACE, "no face could be aligned", faces_detected=usable_count[i]
                    )
        return [outcome for outcome in outcomes if outcome is not None]

    def embed_with_landmarks(self, images: list[bytes], points: list[np.ndarray]) -> list[Template | VerifierError]:
        """Templates from given five points (original pixels) instead of detected ones,
        to measure the embedder alone on a set with published landmarks."""
        outcomes: dict[int, Template | VerifierError] = {}
        crops: dict[int, np.ndarray] = {}
        for i, (data, face_points) in enumerate(zip(images, points, strict=True)):
            try:
                image = self.decoder.decode(data, ImageUse.ENROLMENT)
                crops[i] = align(image.bgr, face_points * image.scale, self.embedder.input_size)
            except VerifierError as exc:
                outcomes[i] = exc
        for i, vector in zip(crops, self.embedder.embed(list(crops.values()))):
            outcomes[i] = Template(model_id=self.model_id, vector=vector)
        return [outcomes[i] for i in range(len(images))]
