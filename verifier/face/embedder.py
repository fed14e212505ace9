"""Face embedding: aligned crops to L2-normalised vectors."""

from __future__ import annotations

import numpy as np

from verifier.face.contract import InputContract
from verifier.modelzoo.manifest import ModelSpec
from verifier.modelzoo.session import Runnable


class Embedder:
    """Owns an embedding session; any model whose manifest entry states its input
    size, colour order, mean/std and output dimension fits here."""

    def __init__(self, spec: ModelSpec, session: Runnable, mirror: bool) -> None:
        self.spec = spec
        self.session = session
        self.contract = InputContract.from_manifest(spec.input)
        self.output_name = spec.output["name"]
        self.dimension = int(spec.output["dimension"])
        self.mirror = mirror

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def input_size(self) -> int:
        return self.contract.width

    def embed(self, aligned_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, dimension) float32 unit vectors for N aligned crops; with ``mirror``
        the embedding of each crop's mirror image is added before normalising."""
        if not aligned_bgr:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch = self.contract.tensor(aligned_bgr)
        if self.mirror:
            batch = np.concatenate([batch, batch[:, :, :, ::-1]])
        (vectors,) = self.session.run([self.output_name], {self.contract.name: np.ascontiguousarray(batch)})
        if self.mirror:
            vectors = vectors[: len(aligned_bgr)] + vectors[len(aligned_bgr) :]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)
