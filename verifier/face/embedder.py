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

    @property
    def utility_members(self) -> tuple[str, ...]:
        """Whose raw output norm :meth:`embed_with_utility` reports, one column each."""
        return (self.model_id,)

    def embed(self, aligned_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, dimension) float32 unit vectors for N aligned crops; with ``mirror``
        the embedding of each crop's mirror image is added before normalising."""
        return self.embed_with_utility(aligned_bgr)[0]

    def embed_with_utility(self, aligned_bgr: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors, and (N, 1) raw output norms before normalising.

        Margin-trained embedders give a face they can recognise well a long
        output vector and an occluded, blurred or badly lit one a short vector,
        so the norm is a model-derived utility signal (ISO/IEC 29794-1's
        "utility") that needs no extra model run; it is comparable only within
        one model, so it is calibrated per pack (``verifier eval --quality``).
        """
        if not aligned_bgr:
            return np.zeros((0, self.dimension), dtype=np.float32), np.zeros((0, 1), dtype=np.float32)
        batch = self.contract.tensor(aligned_bgr)
        if self.mirror:
            batch = np.concatenate([batch, batch[:, :, :, ::-1]])
        (vectors,) = self.session.run([self.output_name], {self.contract.name: np.ascontiguousarray(batch)})
        if self.mirror:
            vectors = vectors[: len(aligned_bgr)] + vectors[len(aligned_bgr) :]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        units = (vectors / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)
        return units, norms.astype(np.float32)
