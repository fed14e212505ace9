"""One evaluation: a labeled set and its templates to every figure of the report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from verifier.config import EvaluationSettings
from verifier.evaluation.cache import SetTemplates
from verifier.evaluation.datasets import LabeledSet, Pairs
from verifier.evaluation.metrics import (
    CrossComparisons,
    FoldAccuracy,
    Identification,
    Interval,
    OperatingPoint,
    cross_comparisons,
    det_curve,
    equal_error_rate,
    fold_accuracy,
    identification,
    operating_points,
    wilson,
)


@dataclass(frozen=True)
class SetSummary:
    name: str
    layout: str
    root: str
    images: int
    subjects: int
    listed_pairs: int


@dataclass(frozen=True)
class Acquisition:
    """Failure to acquire, per image: no usable face (or no published landmarks)."""

    attempts: int
    failures: int
    rate: float
    interval: Interval
    reasons: dict[str, int]


@dataclass(frozen=True)
class Verification:
    """1:1 over every comparison among the acquired images."""

    mated_comparisons: int
    non_mated_comparisons: int
    mated_attempted: int
    non_mated_attempted: int
    eer: float
    eer_threshold: float
    points: list[OperatingPoint]


@dataclass(frozen=True)
class EvaluationResult:
    dataset: SetSummary
    model_id: str
    pack: str
    alignment: str
    selection: str
    confidence: float
    acquisition: Acquisition
    verification: Verification
    protocol: FoldAccuracy | None
    identification: Identification | None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluated:
    """The result and the scores behind it (for the plots)."""

    result: EvaluationResult
    comparisons: CrossComparisons
    det: np.ndarray


def _pair_scores(pairs: Pairs, templates: SetTemplates) -> np.ndarray:
    """Scores of the listed pairs; a pair with an unacquired image gets -inf (no match)."""
    first, second = pairs.first, pairs.second
    scores = np.einsum("ij,ij->i", templates.vectors[first], templates.vectors[second])
    usable = templates.acquired[first] & templates.acquired[second]
    return np.where(usable, scores, -np.inf)


def evaluate(
    labeled: LabeledSet, templates: SetTemplates, settings: EvaluationSettings, pack: str, alignment: str, selection: str
) -> Evaluated:
    failures = len(templates.failures)
    notes: list[str] = []
    comparisons = cross_comparisons(
        templates.vectors, labeled.subjects, templates.acquired, settings.chunk_rows, max(settings.fmr_targets)
    )
    eer, eer_threshold = equal_error_rate(comparisons.mated, comparisons.non_mated)
    points = operating_points(
        comparisons, settings.fmr_targets, settings.confidence, settings.bootstrap_replicates, settings.bootstrap_seed
    )
    for point in points:
        if point.target_fmr * len(comparisons.non_mated) < 10:
            notes.append(
                f"FMR {point.target_fmr:g} rests on fewer than 10 non-mated scores above the threshold: "
                "read it as an order of magnitude"
            )
    protocol = None
    if labeled.pairs is not None:
        protocol = fold_accuracy(_pair_scores(labeled.pairs, templates), labeled.pairs.mated, labeled.pairs.fold)
    ident = None
    if labeled.pairs is None:
        per_subject = np.bincount(labeled.subjects[templates.acquired])
        if np.any(per_subject > 1):
            ident = identification(
                templates.vectors, labeled.subjects, templates.acquired,
                settings.fpir_targets, settings.confidence, settings.chunk_rows,
            )
            if ident.non_mated_searches == 0:
                notes.append("no subject has a single image, so there are no non-mated searches and no FPIR")
        else:
            notes.append("no subject has two acquired images: no 1:N figures")
    result = EvaluationResult(
        dataset=SetSummary(
            name=labeled.name,
            layout=labeled.layout.value,
            root=str(labeled.root),
            images=len(labeled),
            subjects=len(labeled.subject_names),
            listed_pairs=len(labeled.pairs.mated) if labeled.pairs is not None else 0,
        ),
        model_id=templates.model_id,
        pack=pack,
        alignment=alignment,
        selection=selection,
        confidence=settings.confidence,
        acquisition=Acquisition(
            attempts=len(labeled),
            failures=failures,
            rate=failures / len(labeled),
            interval=wilson(failures, len(labeled), settings.confidence),
            reasons=dict(Counter(templates.failures.values())),
        ),
        verification=Verification(
            mated_comparisons=len(comparisons.mated),
            non_mated_comparisons=len(comparisons.non_mated),
            mated_attempted=comparisons.mated_attempted,
            non_mated_attempted=comparisons.non_mated_attempted,
            eer=eer,
            eer_threshold=eer_threshold,
            points=points,
        ),
        protocol=protocol,
        identification=ident,
        notes=notes,
    )
    return Evaluated(result, comparisons, det_curve(comparisons.mated, comparisons.non_mated))
