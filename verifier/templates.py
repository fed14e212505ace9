"""Templates: an embedding that carries the model it came from and a format version.

A template is only ever compared with one from the same model and of the
model's dimension; the vector bytes are little-endian float32, L2-normalised.
Templates from clients and rows read back from disk pass the same checks
(:func:`problem_with`), so nothing malformed is compared, stored or searched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verifier.errors import Reason, VerifierError
from verifier.validation import identifier

TEMPLATE_VERSION = 1
# A stored vector whose norm is this far from 1 was not made by us.
NORM_TOLERANCE = 1e-3
# No embedder we serve comes near this; a larger claim is refused before any allocation.
MAX_DIMENSION = 4096


@dataclass(frozen=True)
class TemplateSpec:
    """What a template of the model in service looks like: its model id and dimension."""

    model_id: str
    dimension: int

    @classmethod
    def fused(cls, parts: "list[TemplateSpec]") -> "TemplateSpec":
        """The spec of several embedders' vectors side by side (score fusion): a
        template of the fusion matches only the same fusion."""
        return cls("+".join(part.model_id for part in parts), sum(part.dimension for part in parts))


def problem_with(version: int, dimension: int, data: bytes) -> tuple[Reason, str] | None:
    """Why these template parts are not a template this service could have made, or None.

    Shared by client input and rows loaded from the store (where a finding
    quarantines the row instead of refusing a request).
    """
    if version != TEMPLATE_VERSION:
        return Reason.TEMPLATE_VERSION_UNSUPPORTED, (
            f"template version {version} is not supported (this service reads version {TEMPLATE_VERSION})"
        )
    if not 0 < dimension <= MAX_DIMENSION or len(data) != 4 * dimension:
        return Reason.TEMPLATE_MALFORMED, f"template says {dimension} values but carries {len(data)} bytes"
    vector = np.frombuffer(data, dtype="<f4")
    if not np.isfinite(vector).all() or abs(float(np.linalg.norm(vector)) - 1.0) > NORM_TOLERANCE:
        return Reason.TEMPLATE_MALFORMED, "template vector is not a finite unit vector"
    return None


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
        if not model_id:
            raise VerifierError(Reason.TEMPLATE_MALFORMED, "template has no model id")
        identifier(model_id, "model_id", reason=Reason.TEMPLATE_MALFORMED)
        problem = problem_with(version, dimension, data)
        if problem is not None:
            reason, message = problem
            raise VerifierError(reason, message, version=version, dimension=dimension, bytes=len(data))
        return cls(model_id=model_id, vector=np.frombuffer(data, dtype="<f4").astype(np.float32), version=version)

    def require(self, spec: TemplateSpec) -> None:
        """Refuse a template made by another model (its scores would mean nothing)
        or of another dimension than the model's (it cannot be compared at all)."""
        if self.model_id != spec.model_id:
            raise VerifierError(
                Reason.TEMPLATE_MODEL_MISMATCH,
                f"template was made by {self.model_id}, this service compares {spec.model_id}",
                template_model=self.model_id, service_model=spec.model_id,
            )
        if self.dimension != spec.dimension:
            raise VerifierError(
                Reason.TEMPLATE_MALFORMED,
                f"template has {self.dimension} values, {spec.model_id} makes {spec.dimension}",
                dimension=self.dimension, expected=spec.dimension,
            )
