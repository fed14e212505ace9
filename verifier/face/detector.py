"""Face detection: one class per model family, each owning its session and its
pre- and post-processing, all reading their contract from the manifest.

A family whose model also gives five landmarks (eyes, nose tip, mouth corners,
in the order of the alignment template) says so with ``gives_landmarks``; a
pack built on it needs no separate landmark model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from verifier.config import DetectorSettings
from verifier.errors import ModelPackError
from verifier.face.contract import InputContract
from verifier.modelzoo.manifest import ModelSpec
from verifier.modelzoo.session import Runnable

log = logging.getLogger(__name__)

# The smallest scale the fine pass reaches by bilinear resizing.
_LINEAR_DOWN_TO = 0.5


@dataclass(frozen=True)
class Detection:
    """A face box in working-image pixels (x1, y1, x2, y2), its score, and the
    five landmarks (5x2, same pixels) where the detector gives them."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


def _takes_any_size(session: Runnable, name: str) -> bool:
    """Whether the graph's input has symbolic height and width (a fully
    convolutional detector exported for any size), read from the graph itself."""
    for entry in session.get_inputs():
        if entry.name == name:
            return all(not isinstance(dim, int) for dim in entry.shape[2:4])
    raise ModelPackError(f"the detector graph has no input named {name!r}")


class FaceDetector:
    """What every family shares: the passes over a frame, letterboxing, the
    score threshold and non-maximum suppression. Subclasses decode outputs
    for a given input size.

    A frame is looked at twice. The coarse pass fits the whole frame into the
    model's input and finds the large faces (a traveller at the camera). The
    fine pass looks at the frame at the scale where a face at the eye-distance
    floor spans ``floor_input_eye_px`` of the model's input (measured:
    README, Detection), as one input where the graph takes any size, else as
    overlapping tiles of the model's own size at that scale and at each
    halving of it down to the coarse pass's. The fine pass's pixels are
    bounded by ``max_input_pixels``. The fine pass keeps candidates down to
    ``candidate_min_score``: a face at the floor scores lower there than the
    same face seen large, and the pipeline's second look (verifier.pipeline)
    keeps such a candidate only where it finds the face at ``min_score``.
    Candidates of every pass are merged by non-maximum suppression."""

    gives_landmarks = False
    # Where the graph takes any input size, it is padded to a multiple of this
    # (the largest stride of the detectors here).
    SIZE_MULTIPLE = 32
    # Decoding grids kept per input size (frame sizes seen by one server are few).
    _GRIDS_KEPT = 16
    # A tile's candidate this close to one of its inner edges is cut by it.
    _TILE_EDGE_PX = 2.0

    def __init__(self, spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> None:
        self.spec = spec
        self.session = session
        self.settings = settings
        self.contract = InputContract.from_manifest(spec.input)
        # The letterbox border is the mean colour, which the model sees as zero.
        self.fill = tuple(int(round(float(m))) for m in np.resize(self.contract.mean.ravel(), 3))
        self.any_size = _takes_any_size(session, self.contract.name)
        # Candidates are decoded down to the fine pass's threshold.
        self.lowest_score = min(settings.min_score, settings.candidate_min_score)
        self._grids: dict[tuple[int, int], Any] = {}
        # Image sizes already reported as looked at below the floor (once each).
        self._warned: set[tuple[int, int]] = set()

    @property
    def input_size(self) -> tuple[int, int]:
        return self.contract.width, self.contract.height

    def _fit(self, bgr: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Resize to the input size; returns the canvas and the x, y scales used."""
        width, height = self.input_size
        h, w = bgr.shape[:2]
        if not self.settings.letterbox:
            return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), width / w, height / h
        scale = min(width / w, height / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        canvas[:] = self.fill
        canvas[:new_h, :new_w] = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
        return canvas, new_w / w, new_h / h

    def _grid(self, size: tuple[int, int], build: Callable[[int, int], Any]) -> Any:
        """A family's decoding grid for one input size, built once and kept."""
        grid = self._grids.get(size)
        if grid is None:
            if len(self._grids) >= self._GRIDS_KEPT:
                self._grids.clear()
            grid = self._grids[size] = build(*size)
        return grid

    def _decode(self, outputs: dict[str, np.ndarray], i: int,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Input ``i``'s candidates in input pixels (input of ``size``, width and
        height): scores (N,), boxes (N, 4) as x1, y1, x2, y2, landmarks (N, 5, 2) or None."""
        raise NotImplementedError

    def fine_scale(self, shape: tuple[int, ...], image_scale: float = 1.0) -> float | None:
        """The scale of the fine pass for an image of ``shape``, or None where the
        coarse pass already sees a face at the floor as large. ``image_scale``:
        this image's pixels per pixel of the image as sent (the floor is in those)."""
        h, w = shape[:2]
        floor = self.settings.min_eye_distance_px * image_scale
        wanted = 1.0 if floor <= 0 else min(1.0, self.settings.floor_input_eye_px / floor)
        budget = float(np.sqrt(self.settings.max_input_pixels / (w * h)))
        if budget < wanted and (w, h) not in self._warned:
            self._warned.add((w, h))
            log.warning("a %dx%d image is looked at %.2f times scaled, not %.2f (detector.max_input_pixels): "
                        "faces with eyes under %.0f px apart may be missed", w, h, budget, wanted,
                        self.settings.floor_input_eye_px / budget / image_scale)
        scale = min(wanted, budget)
        coarse = min(self.contract.width / w, self.contract.height / h)
        return scale if scale > coarse else None

    def detect_batch(self, images: list[np.ndarray], scales: list[float] | None = None) -> list[list[Detection]]:
        """Every face in each image, best first, in the image's pixels: the coarse
        pass over all images in one run, then each image's fine pass. Boxes
        smaller than ``min_face_px`` are dropped. ``scales``: each image's
        pixels per pixel of the image as sent (1 where not given)."""
        coarse = self._coarse(images)
        found = []
        for i, bgr in enumerate(images):
            image_scale = 1.0 if scales is None else scales[i]
            candidates = [coarse[i]]
            scale = self.fine_scale(bgr.shape, image_scale)
            if scale is not None:
                candidates += self._fine(bgr, scale)
            found.append(self._merged(candidates, self.settings.min_face_px * image_scale))
        return found

    def detect_inputs(self, canvases: list[np.ndarray]) -> list[list[Detection]]:
        """Faces in canvases already at the model's input size (face regions), one run."""
        return [self._merged([found], 0.0) for found in self._coarse(canvases)]

    def _coarse(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        if not images:
            return []
        fitted = [self._fit(bgr) for bgr in images]
        outputs = self._run([canvas for canvas, _, _ in fitted], self.input_size)
        return [_scaled(self._kept(outputs, i, self.input_size), 1 / sx, 1 / sy, 0.0, 0.0)
                for i, (_, sx, sy) in enumerate(fitted)]

    def _fine(self, bgr: np.ndarray, scale: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Candidates of the fine pass, in image pixels."""
        h, w = bgr.shape[:2]
        if self.any_size:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            padded = tuple(-(-side // self.SIZE_MULTIPLE) * self.SIZE_MULTIPLE for side in size)
            canvas = np.empty((padded[1], padded[0], 3), dtype=np.uint8)
            canvas[:] = self.fill
            canvas[:size[1], :size[0]] = cv2.resize(bgr, size, interpolation=_shrinking(scale))
            outputs = self._run([canvas], padded)
            candidates = self._kept(outputs, 0, padded, self.settings.candidate_min_score)
            return [_scaled(candidates, w / size[0], h / size[1], 0.0, 0.0)]
        found = []
        coarse = min(self.contract.width / w, self.contract.height / h)
        while scale > coarse:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            scaled = cv2.resize(bgr, size, interpolation=_shrinking(scale))
            tiles = _tiles(size, self.input_size)
            canvases = []
            for x, y in tiles:
                canvas = np.empty((self.contract.height, self.contract.width, 3), dtype=np.uint8)
                canvas[:] = self.fill
                piece = scaled[y:y + self.contract.height, x:x + self.contract.width]
                canvas[:piece.shape[0], :piece.shape[1]] = piece
                canvases.append(canvas)
            outputs = self._run(canvases, self.input_size)
            found += [_scaled(self._whole(self._kept(outputs, k, self.input_size, self.settings.candidate_min_score),
                                          (x, y), size),
                              w / size[0], h / size[1], x, y)
                      for k, (x, y) in enumerate(tiles)]
            scale /= 2
        return found

    def _whole(self, candidates: tuple[np.ndarray, np.ndarray, np.ndarray | None], corner: tuple[int, int],
               size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A tile's candidates less those cut by one of its edges inside the image:
        a part of a face (a mouth, an eye) scores like a face, and the whole face
        lies in a neighbouring tile or is the coarser passes' to find."""
        scores, boxes, points = candidates
        x, y = corner
        width, height = self.input_size
        inner = np.ones(len(scores), dtype=bool)
        margin = self._TILE_EDGE_PX
        if x > 0:
            inner &= boxes[:, 0] > margin
        if y > 0:
            inner &= boxes[:, 1] > margin
        if x + width < size[0]:
            inner &= boxes[:, 2] < width - margin
        if y + height < size[1]:
            inner &= boxes[:, 3] < height - margin
        return scores[inner], boxes[inner], None if points is None else points[inner]

    def _run(self, canvases: list[np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
        names = [out.name for out in self.session.get_outputs()]
        values = self.session.run(names, {self.contract.name: self.contract.tensor(canvases, size)})
        return dict(zip(names, values))

    def _kept(self, outputs: dict[str, np.ndarray], i: int, size: tuple[int, int],
              threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Input ``i``'s candidates at or above ``threshold`` (``min_score`` unless given)."""
        scores, boxes, points = self._decode(outputs, i, size)
        keep = scores >= (self.settings.min_score if threshold is None else threshold)
        return scores[keep], boxes[keep], None if points is None else points[keep]

    def _merged(self, candidates: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                min_side: float) -> list[Detection]:
        """One detection per face of at least ``min_side`` over all passes and tiles, best first."""
        scores = np.concatenate([c[0] for c in candidates])
        boxes = np.concatenate([c[1] for c in candidates]).astype(np.float32)
        marks = None if candidates[0][2] is None else np.concatenate([c[2] for c in candidates]).astype(np.float32)
        large = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= min_side
        scores, boxes = scores[large], boxes[large]
        marks = None if marks is None else marks[large]
        if not len(scores):
            return []
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        chosen = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.lowest_score, self.settings.nms_iou)
        return [Detection(boxes[j], float(scores[j]), None if marks is None else marks[j]) for j in np.ravel(chosen)]


def _shrinking(scale: float) -> int:
    """Interpolation for the fine pass's resize: bilinear down to half size (an
    area average at a non-integer ratio cost 7.8 ms against 1.5 ms for a
    1080p frame to 0.75, and the detector does not need it), area below."""
    return cv2.INTER_LINEAR if scale >= _LINEAR_DOWN_TO else cv2.INTER_AREA


def _scaled(candidates: tuple[np.ndarray, np.ndarray, np.ndarray | None], fx: float, fy: float, x: float,
            y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Candidates of an input whose (0, 0) is (x, y) of an image scaled by 1/fx, 1/fy, in image pixels."""
    scores, boxes, points = candidates
    boxes = (boxes + np.array([x, y, x, y], dtype=np.float32)) * np.array([fx, fy, fx, fy], dtype=np.float32)
    if points is not None:
        points = (points + np.array([x, y], dtype=np.float32)) * np.array([fx, fy], dtype=np.float32)
    return scores, boxes, points


def _tiles(size: tuple[int, int], tile: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of tiles of ``tile`` covering an image of ``size``, each
    overlapping its neighbours by half a tile: a face smaller than half a tile
    lies whole in one of them (larger ones are the coarser passes' to find)."""
    def starts(length: int, span: int) -> list[int]:
        if length <= span:
            return [0]
        step = span // 2
        return list(range(0, length - span, step)) + [length - span]
    return [(x, y) for y in starts(size[1], tile[1]) for x in starts(size[0], tile[0])]


class UltraLightDetector(FaceDetector):
    """Ultra-Light RFB: priors decoded inside the graph, boxes as fractions of the input."""

    def __init__(self, spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> None:
        super().__init__(spec, session, settings)
        self.scores_name = spec.output["scores"]
        self.boxes_name = spec.output["boxes"]
        self.face_column = int(spec.output["face_column"])

    def _decode(self, outputs: dict[str, np.ndarray], i: int,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        scale = np.array([*size, *size], dtype=np.float32)
        return outputs[self.scores_name][i, :, self.face_column], outputs[self.boxes_name][i] * scale, None


class YuNetDetector(FaceDetector):
    """YuNet: per stride, class and objectness scores, box offsets and five
    landmarks relative to each grid cell (the decoding of OpenCV's FaceDetectorYN)."""

    gives_landmarks = True

    def __init__(self, spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> None:
        super().__init__(spec, session, settings)
        self.strides = [int(s) for s in spec.output["strides"]]
        for stride in self.strides:
            if self.contract.width % stride or self.contract.height % stride or self.SIZE_MULTIPLE % stride:
                raise ModelPackError(f"{spec.name}: input {self.contract.width}x{self.contract.height} is not a multiple of {stride}")

    def _cells(self, width: int, height: int) -> dict[int, np.ndarray]:
        cells = {}
        for stride in self.strides:
            ys, xs = np.mgrid[0:height // stride, 0:width // stride]
            cells[stride] = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float32)
        return cells

    def _decode(self, outputs: dict[str, np.ndarray], i: int,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        grid = self._grid(size, self._cells)
        scores, boxes, points = [], [], []
        for stride in self.strides:
            cls = np.clip(outputs[f"cls_{stride}"][i, :, 0], 0, 1)
            obj = np.clip(outputs[f"obj_{stride}"][i, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            # Only cells that pass the score threshold are decoded.
            keep = np.flatnonzero(score >= self.lowest_score)
            cells = grid[stride][keep]
            bbox = outputs[f"bbox_{stride}"][i, keep]
            kps = outputs[f"kps_{stride}"][i, keep].reshape(-1, 5, 2)
            centre = (cells + bbox[:, :2]) * stride
            extent = np.exp(bbox[:, 2:]) * stride
            scores.append(score[keep])
            boxes.append(np.column_stack([centre - extent / 2, centre + extent / 2]))
            points.append((kps + cells[:, None, :]) * stride)
        return np.concatenate(scores), np.concatenate(boxes), np.concatenate(points)


class RetinaFaceDetector(FaceDetector):
    """RetinaFace: softmax scores, box and landmark offsets from square anchors
    per stride, scaled by the training variances."""

    gives_landmarks = True

    def __init__(self, spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> None:
        super().__init__(spec, session, settings)
        out = spec.output
        self.scores_name, self.boxes_name, self.points_name = out["scores"], out["boxes"], out["landmarks"]
        self.face_column = int(out["face_column"])
        self.centre_variance, self.size_variance = (float(v) for v in out["variances"])
        self.strides = [int(stride) for stride in out["strides"]]
        self.anchor_sizes = [[float(size) for size in sizes] for sizes in out["anchor_sizes"]]

    def _anchors(self, width: int, height: int) -> np.ndarray:
        """(centre x, centre y, side, side) per anchor: cell by cell, row by row, each cell's sizes in turn."""
        anchors = []
        for stride, sizes in zip(self.strides, self.anchor_sizes):
            ys, xs = np.mgrid[0:-(-height // stride), 0:-(-width // stride)]
            centres = (np.column_stack([xs.ravel(), ys.ravel()]) + 0.5) * stride
            sides = np.tile(np.asarray(sizes, dtype=np.float64), len(centres))[:, None]
            anchors.append(np.column_stack([np.repeat(centres, len(sizes), axis=0), sides, sides]))
        return np.concatenate(anchors).astype(np.float32)

    def _decode(self, outputs: dict[str, np.ndarray], i: int,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        anchors = self._grid(size, self._anchors)
        # Only anchors that pass the score threshold are decoded: a few of thousands.
        scores = outputs[self.scores_name][i, :, self.face_column]
        keep = np.flatnonzero(scores >= self.lowest_score)
        centre, side = anchors[keep, :2], anchors[keep, 2:]
        loc = outputs[self.boxes_name][i, keep]
        box_centre = centre + loc[:, :2] * self.centre_variance * side
        box_size = side * np.exp(loc[:, 2:] * self.size_variance)
        boxes = np.column_stack([box_centre - box_size / 2, box_centre + box_size / 2])
        marks = outputs[self.points_name][i, keep].reshape(-1, 5, 2)
        points = centre[:, None, :] + marks * self.centre_variance * side[:, None, :]
        return scores[keep], boxes, points


FAMILIES: dict[str, type[FaceDetector]] = {
    "ultralight-rfb": UltraLightDetector,
    "yunet": YuNetDetector,
    "retinaface": RetinaFaceDetector,
}


def detector_for(spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> FaceDetector:
    """The family class the manifest names for this detector."""
    if spec.family not in FAMILIES:
        raise ModelPackError(f"detector {spec.name!r} has family {spec.family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[spec.family](spec, session, settings)
