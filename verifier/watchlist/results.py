"""What the watch-list use cases answer with: candidates of a search, an
enrolment's samples, a load's report and a consistency check."""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.calibration import IdentificationThreshold
from verifier.errors import VerifierError
from verifier.pipeline import FaceResult
from verifier.watchlist.store import Provenance, QuarantinedTemplate, Subject


@dataclass(frozen=True)
class Candidate:
    rank: int
    subject: Subject
    score: float


@dataclass(frozen=True)
class Identification:
    candidates: list[Candidate]
    threshold: IdentificationThreshold
    probe: FaceResult | None
    searched: int
    timings_ms: dict[str, float]
    model_id: str
    # Partner lists among those hit: where each came from.
    provenance: dict[str, Provenance] = field(default_factory=dict)


@dataclass(frozen=True)
class SampleOutcome:
    """One enrolment sample: the face found in it, or why it was not used."""

    index: int
    face: FaceResult | None = None
    error: VerifierError | None = None


@dataclass(frozen=True)
class Enrolment:
    subject: Subject
    samples: list[SampleOutcome]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadReport:
    source: str
    templates: int
    seconds: float
    quarantined: tuple[QuarantinedTemplate, ...] = ()


@dataclass(frozen=True)
class Consistency:
    """The index checked against the store: template ids the store says should
    be searchable but the index lacks, and ids the index holds but should not."""

    store_templates: int
    index_templates: int
    missing: frozenset[int]
    extra: frozenset[int]

    @property
    def agrees(self) -> bool:
        return not self.missing and not self.extra
