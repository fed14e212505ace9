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

    @property
    def utility_members(self) -> tuple[str, ...]:
        """The parts' model ids: each part's raw norm is its own utility signal."""
        return tuple(part.model_id for part in self.parts)

    def embed(self, aligned_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, dimension) float32 unit vectors: the parts' vectors side by side."""
        return self.embed_with_utility(aligned_bgr)[0]

    def embed_with_utility(self, aligned_bgr: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors and (N, parts) raw output norms, one column per part
        (norms of different models are not comparable, so none is mixed here)."""
        scale = np.float32(1.0 / np.sqrt(len(self.parts)))
        outputs = [part.embed_with_utility(aligned_bgr) for part in self.parts]
        vectors = np.concatenate([units * scale for units, _ in outputs], axis=1).astype(np.float32)
        return vectors, np.concatenate([norms for _, norms in outputs], axis=1)
