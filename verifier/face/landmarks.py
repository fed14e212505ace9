"""Facial landmarks: a 68-point model on a grey crop of the face box, reduced to five points."""

from __future__ import annotations

import cv2
import numpy as np

from verifier.face.contract import InputContract
from verifier.modelzoo.manifest import ModelSpec
from verifier.modelzoo.session import Runnable


class LandmarkModel:
    """Owns the landmark session; returns five points (eyes, nose tip, mouth corners)."""

    def __init__(self, spec: ModelSpec, session: Runnable, crop_scale: float) -> None:
        self.spec = spec
        self.session = session
        self.contract = InputContract.from_manifest(spec.input)
        self.output_name = spec.output["name"]
        self.points = int(spec.output["points"])
        self.five_point = [list(group) for group in spec.output["five_point"]]
        self.crop_scale = crop_scale

    def _crop_rect(self, box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The box scaled about its centre, moved inside the image, as integers."""
        h, w = shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        bw = min((box[2] - box[0]) * self.crop_scale, w - 1)
        bh = min((box[3] - box[1]) * self.crop_scale, h - 1)
        x1 = int(np.clip(cx - bw / 2, 0, w - 1 - bw))
        y1 = int(np.clip(cy - bh / 2, 0, h - 1 - bh))
        return x1, y1, max(int(bw), 1), max(int(bh), 1)

    def five_points(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Five landmarks (5x2, image pixels) for each (image, face box) pair, in one batch."""
        if not faces:
            return []
        rects = [self._crop_rect(box, bgr.shape) for bgr, box in faces]
        size = (self.contract.width, self.contract.height)
        crops = [
            cv2.resize(bgr[y : y + h, x : x + w], size, interpolation=cv2.INTER_LINEAR)
            for (bgr, _), (x, y, w, h) in zip(faces, rects)
        ]
        (out,) = self.session.run([self.output_name], {self.contract.name: self.contract.tensor(crops)})
        points = out.reshape(len(faces), self.points, 2)
        result = []
        for (x, y, w, h), face in zip(rects, points):
            absolute = face * np.array([w, h], dtype=np.float32) + np.array([x, y], dtype=np.float32)
            result.append(np.stack([absolute[group].mean(axis=0) for group in self.five_point]).astype(np.float32))
        return result
