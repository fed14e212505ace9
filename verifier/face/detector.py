"""Face detection: the Ultra-Light RFB family (whole image in, scored boxes out)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from verifier.config import DetectorSettings
from verifier.face.contract import InputContract
from verifier.modelzoo.manifest import ModelSpec
from verifier.modelzoo.session import Runnable

# Grey fill for the letterbox border: (127 - mean) / std is zero for this family.
_PAD_VALUE = 127


@dataclass(frozen=True)
class Detection:
    """A face box in working-image pixels (x1, y1, x2, y2) and its score."""

    box: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class FaceDetector:
    """Owns the detector session and its pre- and post-processing."""

    def __init__(self, spec: ModelSpec, session: Runnable, settings: DetectorSettings) -> None:
        self.spec = spec
        self.session = session
        self.settings = settings
        self.contract = InputContract.from_manifest(spec.input)
        self.scores_name = spec.output["scores"]
        self.boxes_name = spec.output["boxes"]
        self.face_column = int(spec.output["face_column"])

    def _fit(self, bgr: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Resize to the input size; returns the canvas and the x, y scales used."""
        width, height = self.contract.width, self.contract.height
        h, w = bgr.shape[:2]
        if not self.settings.letterbox:
            return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR), width / w, height / h
        scale = min(width / w, height / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.full((height, width, 3), _PAD_VALUE, dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return canvas, scale, scale

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Faces in each image, best first, after score threshold and NMS."""
        canvases, scales = [], []
        for bgr in images:
            canvas, sx, sy = self._fit(bgr)
            canvases.append(canvas)
            scales.append((sx, sy))
        scores, boxes = self.session.run(
            [self.scores_name, self.boxes_name], {self.contract.name: self.contract.tensor(canvases)}
        )
        size = np.array([self.contract.width, self.contract.height] * 2, dtype=np.float32)
        results = []
        for i, (sx, sy) in enumerate(scales):
            face = scores[i, :, self.face_column]
            keep = face >= self.settings.min_score
            if not keep.any():
                results.append([])
                continue
            candidates = boxes[i][keep] * size / np.array([sx, sy, sx, sy], dtype=np.float32)
            confidences = face[keep]
            xywh = np.column_stack([candidates[:, :2], candidates[:, 2:] - candidates[:, :2]])
            chosen = cv2.dnn.NMSBoxes(
                xywh.tolist(), confidences.tolist(), self.settings.min_score, self.settings.nms_iou
            )
            found = [Detection(candidates[j].astype(np.float32), float(confidences[j])) for j in np.ravel(chosen)]
            results.append(found)
        return results
