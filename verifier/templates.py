"""Templates: an embedding that carries the model it came from and a format version.

A template is only ever compared with one from the same model; the vector
bytes are little-endian float32, L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verifier.errors import Reason, VerifierError

TEMPLATE_VERSION = 1
# A stored vector whose norm is this far from 1 was not made by us.
_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Template:
    model_id: str
    vector: np.ndarray
    version: int = TEMPLATE_VERSION

    @property
    def dimension(self) -> int:
        return int(self.vector.shape[0])

    def to_bytes(self) -> bytes:
        return self.vector.astype("<f4").tobytes()

    @classmethod
    def from_parts(cls, model_id: str, version: int, dimension: int, data: bytes) -> "Template":
        """Rebuild a template sent by a client, refusing anything we could not have made."""
        if version != TEMPLATE_VERSION:
            raise VerifierError(
                Reason.TEMPLATE_VERSION_UNSUPPORTED,
                f"template version {version} is not supported (this service reads version {TEMPLATE_VERSION})",
                version=version, supported=TEMPLATE_VERSION,
            )
        if not model_id:
            raise VerifierError(Reason.TEMPLATE_MALFORMED, "template has no model id")
        if dimension <= 0 or len(data) != 4 * dimension:
            raise VerifierError(
                Reason.TEMPLATE_MALFORMED, f"template says {dimension} values but carries {len(data)} bytes",
                dimension=dimension, bytes=len(data),
            )
        vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.isfinite(vector).all() or abs(float(np.linalg.norm(vector)) - 1.0) > _NORM_TOLERANCE:
            raise VerifierError(Reason.TEMPLATE_MALFORMED, "template vector is not a finite unit vector")
        return cls(model_id=model_id, vector=vector, version=version)

    def require_model(self, model_id: str) -> None:
        """Refuse a template made by another model: its scores would mean nothing."""
        if self.model_id != model_id:
            raise VerifierError(
                Reason.TEMPLATE_MODEL_MISMATCH,
                f"template was made by {self.model_id}, this service compares {model_id}",
                template_model=self.model_id, service_model=model_id,
            )
