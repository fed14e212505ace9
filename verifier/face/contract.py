"""A model's input contract, read from the manifest, and the one place images become tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from verifier.errors import ModelPackError

_FROM_BGR = {"RGB": cv2.COLOR_BGR2RGB, "GREY": cv2.COLOR_BGR2GRAY, "BGR": None}


@dataclass(frozen=True)
class InputContract:
    name: str
    width: int
    height: int
    colour: str
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> "InputContract":
        if entry.get("layout", "NCHW") != "NCHW":
            raise ModelPackError(f"only NCHW inputs are supported, got {entry.get('layout')}")
        colour = entry["colour"]
        if colour not in _FROM_BGR:
            raise ModelPackError(f"unknown colour order {colour!r}")
        return cls(
            name=entry["name"],
            width=int(entry["width"]),
            height=int(entry["height"]),
            colour=colour,
            mean=np.asarray(entry["mean"], dtype=np.float32).reshape(1, -1, 1, 1),
            std=np.asarray(entry["std"], dtype=np.float32).reshape(1, -1, 1, 1),
        )

    def tensor(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        """BGR uint8 crops already at the input size -> normalised NCHW float32 batch."""
        code = _FROM_BGR[self.colour]
        planes = [crop if code is None else cv2.cvtColor(crop, code) for crop in crops_bgr]
        batch = np.stack(planes).astype(np.float32)
        batch = batch[:, None] if batch.ndim == 3 else batch.transpose(0, 3, 1, 2)
        return (batch - self.mean) / self.std
