"""Face detection: one class per model family, each owning its session and its
pre- and post-processing, all reading their contract from the manifest.

A family whose model also gives five landmarks (eyes, nose tip, mouth corners,
in the order of the alignment template) says so with ``gives_landmarks``; a
pack built on it needs no separate landmark model.
"""

from __future__ import annotations

from dataclasses import dataclass
import cv2
import numpy as np

from verifier.config import DetectorSettings
from verifier.errors import ModelPackError
from verifier.face.contract import InputContract
from verifier.modelzoo.manifest import ModelSpec
from verifier.modelzoo.session import Runnable


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


class FaceDetector:
    """What every family shares: letterboxing into the model's input, the
    score threshold and non-maximum suppression. Subclasses decode outputs."""

    gives_landmarks = False

    def __init__(self, spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> None:
        self.spec = spec
        self.session = session
        self.settings = settings
        self.contract = InputContract.from_manifest(spec.input)
        # The letterbox border is the mean colour, which the model sees as zero.
        self._pad = tuple(int(round(float(m))) for m in np.resize(self.contract.mean.ravel(), 3))

    def _fit(self, bgr: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Resize to the input size; returns the canvas and the x, y scales used."""
        width, height = self.contract.width, self.contract.height
        h, w = bgr.shape[:2]
        if not self.settings.letterbox:
            return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR), width / w, height / h
        scale = min(width / w, height / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        canvas[:] = self._pad
        canvas[:new_h, :new_w] = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return canvas, scale, scale

    def _decode(self, outputs: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Image ``i``'s candidates in canvas pixels: scores (N,), boxes (N, 4) as
        x1, y1, x2, y2, and landmarks (N, 5, 2) or None."""
        raise NotImplementedError

    def detect_batch(self, images: list[np.ndarray], zoom: float = 1.0) -> list[list[Detection]]:
        """Faces in each image, best first, after score threshold and NMS.

        ``zoom`` above 1: an image in which nothing is found is looked at again,
        its centre (1/zoom of each side) filling the model's input, so a face
        too small for the whole frame at the model's input size (a traveller
        still far down a walk-through gate) is found there; the faces found
        are given in the whole image's pixels. The rest of the frame gets no
        second look."""
        found = self._detect(images)
        if zoom <= 1.0:
            return found
        missed = [i for i, faces in enumerate(found) if not faces]
        centres = []
        for i in missed:
            h, w = images[i].shape[:2]
            crop_w, crop_h = max(1, round(w / zoom)), max(1, round(h / zoom))
            x0, y0 = (w - crop_w) // 2, (h - crop_h) // 2
            centres.append((images[i][y0:y0 + crop_h, x0:x0 + crop_w], np.array([x0, y0], dtype=np.float32)))
        for i, (crop, offset), faces in zip(missed, centres, self._detect([c for c, _ in centres])):
            found[i] = [
                Detection(d.box + np.tile(offset, 2), d.score, None if d.landmarks is None else d.landmarks + offset)
                for d in faces
            ]
        return found

    def _detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        if not images:
            return []
        canvases, scales = [], []
        for bgr in images:
            canvas, sx, sy = self._fit(bgr)
            canvases.append(canvas)
            scales.append((sx, sy))
        names = [out.name for out in self.session.get_outputs()]
        values = self.session.run(names, {self.contract.name: self.contract.tensor(canvases)})
        outputs = dict(zip(names, values))
        results = []
        for i, (sx, sy) in enumerate(scales):
            scores, boxes, points = self._decode(outputs, i)
            keep = scores >= self.settings.min_score
            if not keep.any():
                results.append([])
                continue
            candidates = boxes[keep] / np.array([sx, sy, sx, sy], dtype=np.float32)
            confidences = scores[keep]
            marks = points[keep] / np.array([sx, sy], dtype=np.float32) if points is not None else None
            xywh = np.column_stack([candidates[:, :2], candidates[:, 2:] - candidates[:, :2]])
            chosen = cv2.dnn.NMSBoxes(
                xywh.tolist(), confidences.tolist(), self.settings.min_score, self.settings.nms_iou
            )
            results.append([
                Detection(
                    candidates[j].astype(np.float32),
                    float(confidences[j]),
                    None if marks is None else marks[j].astype(np.float32),
                )
                for j in np.ravel(chosen)
            ])
        return results


class UltraLightDetector(FaceDetector):
    """Ultra-Light RFB: priors decoded inside the graph, boxes as fractions of the input."""

    def __init__(self, spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> None:
        super().__init__(spec, session, settings)
        self.scores_name = spec.output["scores"]
        self.boxes_name = spec.output["boxes"]
        self.face_column = int(spec.output["face_column"])
        self._size = np.array([self.contract.width, self.contract.height] * 2, dtype=np.float32)

    def _decode(self, outputs: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return outputs[self.scores_name][i, :, self.face_column], outputs[self.boxes_name][i] * self._size, None


class YuNetDetector(FaceDetector):
    """YuNet: per stride, class and objectness scores, box offsets and five
    landmarks relative to each grid cell (the decoding of OpenCV's FaceDetectorYN)."""

    gives_landmarks = True

    def __init__(self, spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> None:
        super().__init__(spec, session, settings)
        self.strides = [int(s) for s in spec.output["strides"]]
        for stride in self.strides:
            if self.contract.width % stride or self.contract.height % stride:
                raise ModelPackError(f"{spec.name}: input {self.contract.width}x{self.contract.height} is not a multiple of {stride}")
        self._cells: dict[int, np.ndarray] = {}
        for stride in self.strides:
            cols, rows = self.contract.width // stride, self.contract.height // stride
            ys, xs = np.mgrid[0:rows, 0:cols]
            self._cells[stride] = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float32)

    def _decode(self, outputs: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        scores, boxes, points = [], [], []
        for stride in self.strides:
            cls = np.clip(outputs[f"cls_{stride}"][i, :, 0], 0, 1)
            obj = np.clip(outputs[f"obj_{stride}"][i, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            # Only cells that pass the score threshold are decoded.
            keep = np.flatnonzero(score >= self.settings.min_score)
            cells = self._cells[stride][keep]
            bbox = outputs[f"bbox_{stride}"][i, keep]
            kps = outputs[f"kps_{stride}"][i, keep].reshape(-1, 5, 2)
            centre = (cells + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:]) * stride
            scores.append(score[keep])
            boxes.append(np.column_stack([centre - size / 2, centre + size / 2]))
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
        anchors = []
        for stride, sizes in zip(out["strides"], out["anchor_sizes"]):
            cols = -(-self.contract.width // int(stride))
            rows = -(-self.contract.height // int(stride))
            ys, xs = np.mgrid[0:rows, 0:cols]
            centres = (np.column_stack([xs.ravel(), ys.ravel()]) + 0.5) * int(stride)
            for centre in centres:
                for size in sizes:
                    anchors.append([centre[0], centre[1], float(size), float(size)])
        self._anchors = np.asarray(anchors, dtype=np.float32)

    def _decode(self, outputs: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        # Only anchors that pass the score threshold are decoded: a few of 3,160.
        scores = outputs[self.scores_name][i, :, self.face_column]
        keep = np.flatnonzero(scores >= self.settings.min_score)
        centre, size = self._anchors[keep, :2], self._anchors[keep, 2:]
        loc = outputs[self.boxes_name][i, keep]
        box_centre = centre + loc[:, :2] * self.centre_variance * size
        box_size = size * np.exp(loc[:, 2:] * self.size_variance)
        boxes = np.column_stack([box_centre - box_size / 2, box_centre + box_size / 2])
        marks = outputs[self.points_name][i, keep].reshape(-1, 5, 2)
        points = centre[:, None, :] + marks * self.centre_variance * size[:, None, :]
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
