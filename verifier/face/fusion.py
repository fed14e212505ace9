"""Score fusion of several embedders, shaped as one embedder.

Each part's unit vector is scaled by 1/sqrt(k) and the k parts are concatenated.
The result is again a unit vector, and the cosine of two such vectors is exactly
the mean of the parts' cosines, so mean-score fusion needs no change to
templates, matching or the FAISS index: only the model id and dimension differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from verifier.errors import ModelPackError
from verifier.face.embedder import Embedder
from verifier.templates import TemplateSpec


class FusedEmbedder:
    """Embedders that share one aligned crop, fused by the mean of their cosines."""

    def __init__(self, parts: Sequence[Embedder]) -> None:
        if len(parts) < 2:
            raise ModelPackError("fusion needs at least two embedders")
        sizes = {part.input_size for part in parts}
        if len(sizes) != 1:
            raise ModelPackError(f"fused embedders must take one crop size, these take {sorted(sizes)}")
        self.parts = tuple(parts)
        self.dimension = sum(part.dimension for part in parts)

    @property
    def model_id(self) -> str:
        """The parts' ids joined: a template of the fusion matches only the same fusion."""
        return TemplateSpec.fused([TemplateSpec(part.model_id, part.dimension) for part in self.parts]).model_id

    @property
    def input_size(self) -> int:
        return self.parts[0].input_size

    def embed(self, aligned_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, dimension) float32 unit vectors: the parts' vectors side by side."""
        scale = np.float32(1.0 / np.sqrt(len(self.parts)))
        return np.concatenate([part.embed(aligned_bgr) * scale for part in self.parts], axis=1).astype(np.float32)
