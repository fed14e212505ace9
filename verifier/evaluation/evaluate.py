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
    count_at_or_above,
    count_below,
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
from verifier.matching import Threshold


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
class ServedPoint:
    """The threshold the service decides at, measured on this set: whether its
    false-match rate holds here (ratio of measured to target FMR) and what it misses."""

    threshold: float
    target_fmr: float
    source: str
    false_matches: int
    fmr: float
    fmr_ratio: float
    false_non_matches: int
    fnmr: float
    # FTA folded in: a genuine traveller whose image is not acquired is rejected too.
    frr: float


@dataclass(frozen=True)
class EvaluationResult:
    dataset: SetSummary
    model_id: str
    pack: str
    alignment: str
    selection: str
    confidence: float
    acquisition: Acquisition
    # None where no mated or no non-mated comparison was left (every image failed, say).
    verification: Verification | None
    protocol: FoldAccuracy | None
    identification: Identification | None
    notes: list[str] = field(default_factory=list)
    condition: str = ""
    # The served threshold with both images in the condition, and with one (against the clean set).
    served: ServedPoint | None = None
    served_mixed: ServedPoint | None = None


@dataclass(frozen=True)
class Evaluated:
    """The result and the scores behind it (for the plots)."""

    result: EvaluationResult
    comparisons: CrossComparisons | None
    det: np.ndarray


def _pair_scores(pairs: Pairs, templates: SetTemplates) -> np.ndarray:
    """Scores of the listed pairs; a pair with an unacquired image gets -inf (no match)."""
    first, second = pairs.first, pairs.second
    scores = np.einsum("ij,ij->i", templates.vectors[first], templates.vectors[second])
    usable = templates.acquired[first] & templates.acquired[second]
    return np.where(usable, scores, -np.inf)


def _comparable(labeled: LabeledSet, templates: SetTemplates) -> bool:
    """Whether the acquired images leave at least one mated and one non-mated comparison."""
    per_subject = np.bincount(labeled.subjects[templates.acquired], minlength=len(labeled.subject_names))
    mated = int(np.sum(per_subject * (per_subject - 1) // 2))
    acquired = int(per_subject.sum())
    return mated > 0 and acquired * (acquired - 1) // 2 > mated


def _verification(comparisons: CrossComparisons, settings: EvaluationSettings, notes: list[str]) -> Verification:
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
    return Verification(
        mated_comparisons=len(comparisons.mated),
        non_mated_comparisons=len(comparisons.non_mated),
        mated_attempted=comparisons.mated_attempted,
        non_mated_attempted=comparisons.non_mated_attempted,
        eer=eer,
        eer_threshold=eer_threshold,
        points=points,
    )


def served_point(comparisons: CrossComparisons, threshold: Threshold) -> ServedPoint:
    """The served threshold's FMR and FNMR on this set's comparisons."""
    lost = 1 - len(comparisons.mated) / comparisons.mated_attempted if comparisons.mated_attempted else 0.0
    return _served(
        threshold,
        count_at_or_above(comparisons.non_mated, threshold.value), len(comparisons.non_mated),
        count_below(comparisons.mated, threshold.value), len(comparisons.mated), lost,
    )


def _served(
    threshold: Threshold, false_matches: int, non_mated: int, false_non_matches: int, mated: int, lost: float
) -> ServedPoint:
    """The served point from its counts; ``lost`` is the share of mated comparisons
    never made because an image failed to acquire (FRR counts them as rejections)."""
    fmr, fnmr = false_matches / non_mated, false_non_matches / mated
    return ServedPoint(
        threshold=threshold.value,
        target_fmr=threshold.false_match_rate,
        source=threshold.source,
        false_matches=false_matches,
        fmr=fmr,
        fmr_ratio=fmr / threshold.false_match_rate,
        false_non_matches=false_non_matches,
        fnmr=fnmr,
        frr=lost + (1 - lost) * fnmr,
    )


def mixed_served_point(
    labeled: LabeledSet,
    derived: SetTemplates,
    clean: SetTemplates,
    threshold: Threshold,
    chunk_rows: int,
) -> ServedPoint | None:
    """The served threshold where only one side is in the condition: each derived image
    against every clean image of the set (a degraded capture against a good chip), the
    pair of an image with itself left out. None where nothing is left to compare."""
    rows, cols = np.flatnonzero(derived.acquired), np.flatnonzero(clean.acquired)
    if not len(rows) or not len(cols):
        return None
    subjects = labeled.subjects
    false_matches = non_mated = false_non_matches = mated = 0
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start : start + chunk_rows]
        scores = derived.vectors[chunk] @ clean.vectors[cols].T
        same = subjects[chunk, None] == subjects[None, cols]
        itself = chunk[:, None] == cols[None, :]
        genuine = same & ~itself
        false_matches += int(np.count_nonzero(scores[~same] >= threshold.value))
        non_mated += int(np.count_nonzero(~same))
        false_non_matches += int(np.count_nonzero(scores[genuine] < threshold.value))
        mated += int(np.count_nonzero(genuine))
    if not mated or not non_mated:
        return None
    per_subject = np.bincount(subjects, minlength=len(labeled.subject_names))
    attempted = int(np.sum(per_subject * (per_subject - 1)))
    lost = 1 - mated / attempted if attempted else 0.0
    return _served(threshold, false_matches, non_mated, false_non_matches, mated, lost)


def evaluate(
    labeled: LabeledSet,
    templates: SetTemplates,
    settings: EvaluationSettings,
    pack: str,
    alignment: str,
    selection: str,
    served: Threshold | None = None,
    condition: str = "",
    clean: SetTemplates | None = None,
) -> Evaluated:
    """Every figure of the report; a set whose acquired images leave nothing to
    compare (every image failed to acquire) still reports its failures."""
    failures = len(templates.failures)
    notes: list[str] = []
    comparisons = None
    verification = None
    if _comparable(labeled, templates):
        comparisons = cross_comparisons(
            templates.vectors, labeled.subjects, templates.acquired, settings.chunk_rows, max(settings.fmr_targets)
        )
        verification = _verification(comparisons, settings, notes)
    else:
        notes.append(
            f"{failures} of {len(labeled)} images failed to acquire: the rest leave no mated or no non-mated "
            "comparison, so there are no 1:1 figures"
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
        verification=verification,
        protocol=protocol,
        identification=ident,
        notes=notes,
        condition=condition,
        served=served_point(comparisons, served) if served is not None and comparisons is not None else None,
        served_mixed=(
            mixed_served_point(labeled, templates, clean, served, settings.chunk_rows)
            if served is not None and clean is not None else None
        ),
    )
    det = det_curve(comparisons.mated, comparisons.non_mated) if comparisons is not None else np.zeros((0, 2))
    return Evaluated(result, comparisons, det)
