"""The registry's duplicate decision: one registration against every registered
traveller, calibrated as a 1:N decision at the registry's current size.

Why not one score threshold: a registration compares two new faces (chip photo
and live capture) with two stored faces of every traveller, about 4N
comparisons. A threshold with a per-comparison false-match rate p lets a
stranger through with probability about 4Np, so a threshold that is strict at
one comparison (0.60: 8.3e-7 on LFW dev) flags tens of strangers per
registration at ten million travellers. What must be held is the rate per
*registration*, and that depends on N.

The evidence, per registered traveller near either new face (a candidate):

- ``both``: the lower of the two new faces' scores against the candidate
  (each face's score is its best against the candidate's stored templates).
  Two captures of one person both look like the candidate; a stranger who
  happens to resemble one capture rarely resembles the other, so ``both``
  separates duplicates from strangers better than either face alone, and
  one lookalike capture cannot make a certain duplicate.
- ``either``: the higher of the two, which catches a duplicate whose one capture
  is poor; it is never enough for a certain refusal, only for an officer.
- the document: a candidate holding the same document-number hash as the
  registration is the same document presented again.

The thresholds come from the upper tail of the non-mated ``both`` and
``either`` scores, modelled as exponential above an anchor
(:class:`ScoreTail`, fitted by :func:`fit_tail` from measured scores: LFW dev
by ``python -m benchmarks.duplicates --fit`` for the served model, refitted
when the model changes, or a site's own nearest-other scores).
With per-candidate tail probability p(t), the chance that the best of N
strangers reaches t is 1 - (1 - p(t))^N; the threshold for a target rate r per
registration solves that for t. Assumptions, stated where they are used:

- the tail above the anchor is no heavier than exponential. Cosine scores are
  bounded by 1, so their true tail is lighter than that and the thresholds err
  high (fewer strangers flagged, not more); on LFW dev the exponential fitted to
  the top 1 % of single comparisons over-predicts the measured tail (README);
- candidates are independent given the registration. Where some registrations
  look like many people (a "generic" face), the rate averaged over
  registrations is lower than the formula's (the formula is concave in p), so
  the target holds on average, not for every face;
- the population resembles the one the tail was measured on. A homogeneous site
  (one camera, one light) has a heavier tail: refit on its own scores;
- N is the number of templates indexed, an upper bound on the travellers (two
  templates each), so the thresholds err high.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from verifier.store_config import RegistrySettings, ScoreTail
from verifier.errors import Reason, VerifierError


class Outcome(str, Enum):
    """What the registration may do: go on, go to an officer, or be refused."""

    NONE = "NONE"
    SUSPECTED = "SUSPECTED"
    CERTAIN = "CERTAIN"


@dataclass(frozen=True)
class Candidate:
    """A registered traveller (its store row) as the new faces see it.

    ``faces`` holds one score per new face; a face whose search did not return
    the candidate carries its search's lowest returned score, an upper bound of
    its true score, so fusion never understates the evidence for want of depth.
    """

    row: int
    faces: tuple[float, ...]

    @property
    def both(self) -> float:
        return min(self.faces)

    @property
    def either(self) -> float:
        return max(self.faces)


@dataclass(frozen=True)
class Thresholds:
    """The fused-score thresholds at one registry size."""

    size: int
    certain: float
    refer_both: float
    refer_either: float


@dataclass(frozen=True)
class Finding:
    """The decision, the candidate it names and what it rests on (for the error
    details and the audit); ``nearest``: the best single-face score seen
    against another traveller (None: nobody registered)."""

    outcome: Outcome
    thresholds: Thresholds
    candidate: Candidate | None
    found_by: str
    nearest: float | None


# Outcomes from the weakest to the strongest: a finding reports the strongest earned.
_RANK = (Outcome.NONE, Outcome.SUSPECTED, Outcome.CERTAIN)


def tail_probability(tail: ScoreTail, score: float) -> float:
    """P(S >= score) for one non-mated candidate, by the exponential tail (1 below its anchor)."""
    if score <= tail.anchor:
        return 1.0
    return tail.exceedance * math.exp(-(score - tail.anchor) / tail.scale)


def per_candidate_rate(rate: float, size: int) -> float:
    """The per-candidate tail probability p at which the best of ``size`` independent
    candidates reaches the threshold with probability ``rate``: 1 - (1 - p)^size = rate."""
    return -math.expm1(math.log1p(-rate) / max(size, 1))


def threshold(tail: ScoreTail, rate: float, size: int) -> float:
    """The score the best of ``size`` non-mated candidates reaches with probability
    ``rate``. Never below the tail's anchor: the model says nothing beneath it."""
    wanted = per_candidate_rate(rate, size)
    if wanted >= tail.exceedance:
        return tail.anchor
    return tail.anchor + tail.scale * math.log(tail.exceedance / wanted)


def registration_rate(tail: ScoreTail, score: float, size: int) -> float:
    """The chance that the best of ``size`` non-mated candidates reaches ``score``."""
    probability = tail_probability(tail, score)
    return 1.0 if probability >= 1.0 else -math.expm1(size * math.log1p(-probability))


def fit_tail(scores: np.ndarray, exceedance: float) -> ScoreTail:
    """The exponential tail fitted to the top ``exceedance`` share of non-mated
    scores: anchor at that quantile, scale the mean excess above it (the
    exponential's maximum-likelihood scale)."""
    values = np.asarray(scores, dtype=np.float64)
    if not 0.0 < exceedance < 1.0:
        raise ValueError("the exceedance share lies strictly between 0 and 1")
    anchor = float(np.quantile(values, 1.0 - exceedance))
    above = values[values > anchor]
    if len(above) < 2:
        raise ValueError(f"{len(values)} scores leave fewer than two above the {exceedance:g} quantile")
    return ScoreTail(anchor=anchor, exceedance=len(above) / len(values), scale=float(np.mean(above - anchor)))


def fuse(results: Sequence[tuple[np.ndarray, np.ndarray]], exclude: int | None = None) -> list[Candidate]:
    """Candidates from each new face's search results (scores, store rows; a row
    may appear once per stored template): each face's score is its best for the
    row, or, where its search did not return the row, its lowest returned score."""
    best: list[dict[int, float]] = []
    floors: list[float] = []
    for scores, rows in results:
        seen: dict[int, float] = {}
        for score, row in zip(np.asarray(scores).tolist(), np.asarray(rows).tolist()):
            if row != exclude and row >= 0:
                seen[row] = max(score, seen.get(row, -math.inf))
        best.append(seen)
        floors.append(float(np.min(scores)) if len(scores) else -math.inf)
    rows_seen = set().union(*best) if best else set()
    return [Candidate(row, tuple(face.get(row, floor) for face, floor in zip(best, floors)))
            for row in sorted(rows_seen)]


class DuplicatePolicy:
    """The decision at the registry's current size, from the registry's settings."""

    def __init__(self, settings: RegistrySettings) -> None:
        """Refuses a referral rate below the certain rate: officers see at least
        what is refused outright, or evidence between the two would pass unreviewed."""
        if settings.duplicate_refer_rate < settings.duplicate_certain_rate:
            raise ValueError("registry.duplicate_refer_rate is below registry.duplicate_certain_rate")
        self.settings = settings

    def thresholds(self, size: int) -> Thresholds:
        s = self.settings
        return Thresholds(size=size,
                          certain=threshold(s.duplicate_tail_both, s.duplicate_certain_rate, size),
                          refer_both=threshold(s.duplicate_tail_both, s.duplicate_refer_rate, size),
                          refer_either=threshold(s.duplicate_tail_either, s.duplicate_refer_rate, size))

    def decide(self, candidates: Sequence[Candidate], size: int, same_document: frozenset[int] = frozenset()) -> Finding:
        """CERTAIN when both faces reach the certain threshold for one candidate, or
        when a candidate the faces suspect holds the same document; SUSPECTED when
        both reach the referral threshold or either face reaches its own; else NONE.
        The candidate named is the one with the strongest outcome, then the highest ``both``."""
        limits = self.thresholds(size)
        if not candidates:
            return Finding(Outcome.NONE, limits, None, "", None)
        graded = [(self._grade(candidate, limits, candidate.row in same_document), candidate)
                  for candidate in candidates]
        (outcome, found_by), candidate = max(graded, key=lambda item: (_RANK.index(item[0][0]), item[1].both))
        return Finding(outcome, limits, candidate, found_by, max(c.either for c in candidates))

    @staticmethod
    def _grade(candidate: Candidate, limits: Thresholds, same_document: bool) -> tuple[Outcome, str]:
        if candidate.both >= limits.certain:
            return Outcome.CERTAIN, "face+document" if same_document else "face"
        suspected = candidate.both >= limits.refer_both or candidate.either >= limits.refer_either
        if suspected and same_document:
            return Outcome.CERTAIN, "face+document"
        if candidate.both >= limits.refer_both:
            return Outcome.SUSPECTED, "face"
        if candidate.either >= limits.refer_either:
            return Outcome.SUSPECTED, "one_face"
        return Outcome.NONE, ""


def refusal(finding: Finding, other_traveller_id: str) -> VerifierError | None:
    """The refusal a finding calls for (None: the registration goes on).

    DUPLICATE_IDENTITY: the face is another traveller's beyond reasonable doubt
    at this size. DUPLICATE_SUSPECTED: the evidence is past what strangers reach
    at the referral rate but short of certain; an officer compares the
    traveller with the record named before anything is stored."""
    if finding.outcome is Outcome.NONE or finding.candidate is None:
        return None
    details = dict(other_traveller_id=other_traveller_id, score=f"{finding.candidate.both:.4f}",
                   best_face_score=f"{finding.candidate.either:.4f}", found_by=finding.found_by,
                   registry_size=finding.thresholds.size)
    if finding.outcome is Outcome.CERTAIN:
        return VerifierError(Reason.DUPLICATE_IDENTITY,
                             f"this face is registered under traveller {other_traveller_id!r}: refer to an officer",
                             threshold=f"{finding.thresholds.certain:.4f}", **details)
    return VerifierError(Reason.DUPLICATE_SUSPECTED,
                         f"this face may be registered under traveller {other_traveller_id!r}: an officer decides",
                         threshold=f"{finding.thresholds.refer_both:.4f}",
                         threshold_one_face=f"{finding.thresholds.refer_either:.4f}", **details)
