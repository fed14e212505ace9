"""Passive presentation-attack detection (PAD): one model's view of whether a
face in a single frame is a live person or an artefact (print, screen, mask).

The manifest gives the model (task ``liveness``), its input contract, how much
context around the detected box it looks at (``crop_scale``: such models judge
the paper edge, screen bezel and moiré around the face, not the aligned face)
and which output class is the live one. The score is that class's softmax
probability; the gate compares it with ``gate.pad_threshold``.

What a score means is only known from measurement: BPCER on bona fide faces
(``verifier pad-eval``, README) and APCER only on real attack images, which
this project does not have.
"""

from __future__ import annotations

import cv2
import numpy as np

from verifier.errors import ModelPackError
from verifier.face.contract import InputContract
from verifier.modelzoo.manifest import ModelSpec
from verifier.modelzoo.session import Runnable


class LivenessModel:
    """Owns a PAD session; crops each face with its context and scores it."""

    def __init__(self, spec: ModelSpec, session: Runnable) -> None:
        self.spec = spec
        self.session = session
        self.contract = InputContract.from_manifest(spec.input)
        self.output_name = spec.output["name"]
        self.classes = int(spec.output["classes"])
        self.live_class = int(spec.output["live_class"])
        self.crop_scale = float(spec.input["crop_scale"])
        if not 0 <= self.live_class < self.classes or not self.crop_scale > 0:
            raise ModelPackError(f"{spec.name}: live_class must be a class index and crop_scale positive")

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def crop(self, bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The face box grown ``crop_scale`` times about its centre (less where the
        image is too small, keeping the box's aspect), moved inside the image,
        resized to the model's input."""
        h, w = bgr.shape[:2]
        box_w, box_h = max(float(box[2] - box[0]), 1.0), max(float(box[3] - box[1]), 1.0)
        scale = min((h - 1) / box_h, (w - 1) / box_w, self.crop_scale)
        crop_w, crop_h = box_w * scale, box_h * scale
        x1 = float(np.clip((box[0] + box[2]) / 2 - crop_w / 2, 0, max(w - 1 - crop_w, 0)))
        y1 = float(np.clip((box[1] + box[3]) / 2 - crop_h / 2, 0, max(h - 1 - crop_h, 0)))
        region = bgr[int(y1): int(y1) + max(int(crop_h), 1), int(x1): int(x1) + max(int(crop_w), 1)]
        return cv2.resize(region, (self.contract.width, self.contract.height), interpolation=cv2.INTER_LINEAR)

    def live_probability(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N,) probability of the live class for N crops from :meth:`crop`."""
        if not crops:
            return np.zeros(0, dtype=np.float32)
        (logits,) = self.session.run([self.output_name], {self.contract.name: self.contract.tensor(crops)})
        logits = logits.reshape(len(crops), self.classes).astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp[:, self.live_class] / exp.sum(axis=1)).astype(np.float32)
