"""Accuracy figures in ISO/IEC 19795-1 terms, from scores.

Conventions: a comparison is a match when its score is at or above the
threshold; the threshold for a target false-match rate is the lowest one at
which no more than ``floor(target * N)`` of the N non-mated comparisons match.

Intervals:
- Wilson score interval on a count of errors, which treats comparisons as
  independent trials at a fixed threshold. They are not: every image takes part
  in many comparisons, so this interval is too narrow, and more so for FMR.
- Subject bootstrap: subjects drawn with replacement, each comparison weighted
  by how often its subjects were drawn, the threshold found again in every
  replicate. It keeps the correlation between comparisons of the same people and
  the uncertainty of the threshold itself; percentile interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# Non-mated scores kept, with their subjects, for the bootstrap: this many times
# the largest target FMR, as a fraction of all non-mated scores, and at least
# _TAIL_MINIMUM of them (all of a small set).
_TAIL_FACTOR = 5.0
_TAIL_MINIMUM = 100_000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str


def wilson(errors: int, trials: int, confidence: float) -> Interval:
    """Wilson score interval for a binomial proportion ``errors / trials``."""
    if trials == 0:
        return Interval(0.0, 1.0, "wilson")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = errors / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half), "wilson")


def threshold_at(non_mated_ascending: np.ndarray, target_rate: float) -> float:
    """The lowest threshold at which at most ``floor(target * N)`` non-mated scores match."""
    n = len(non_mated_ascending)
    allowed = math.floor(target_rate * n)
    if allowed >= n:
        return -math.inf
    highest_rejected = non_mated_ascending[n - 1 - allowed]
    return float(np.nextafter(np.float32(highest_rejected), np.float32(np.inf)))


def count_at_or_above(ascending: np.ndarray, threshold: float) -> int:
    return int(len(ascending) - np.searchsorted(ascending, np.float32(threshold), side="left"))


def count_below(ascending: np.ndarray, threshold: float) -> int:
    return int(np.searchsorted(ascending, np.float32(threshold), side="left"))


@dataclass(frozen=True)
class CrossComparisons:
    """Every mated and non-mated comparison among a set's acquired images.

    ``non_mated`` is sorted ascending; ``tail``/``tail_subjects`` are its highest
    scores with the two subjects of each, for the subject bootstrap.
    """

    mated: np.ndarray
    mated_subject: np.ndarray
    non_mated: np.ndarray
    tail: np.ndarray
    tail_subjects: np.ndarray
    acquired_per_subject: np.ndarray
    # Comparisons that would exist had every image been acquired.
    mated_attempted: int
    non_mated_attempted: int


def _pairs_within(counts: np.ndarray) -> int:
    return int(np.sum(counts * (counts - 1) // 2))


def _upper_triangle(
    vectors: np.ndarray, subjects: np.ndarray, chunk_rows: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Rows ``start..`` of the score matrix against every later image, with the masks of
    the pairs i < j and of the pairs of one subject."""
    n = len(vectors)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        scores = vectors[start:stop] @ vectors[start + 1 :].T
        upper = np.arange(start, stop)[:, None] < np.arange(start + 1, n)[None, :]
        same = subjects[start:stop, None] == subjects[None, start + 1 :]
        yield start, scores, upper, same


def cross_comparisons(
    vectors: np.ndarray, subjects: np.ndarray, acquired: np.ndarray, chunk_rows: int, largest_target: float
) -> CrossComparisons:
    """All pairs i < j of acquired images, scored by rows of ``chunk_rows`` at a time
    (a second pass collects the subjects of the highest non-mated scores)."""
    subject_count = int(subjects.max()) + 1
    if subject_count < 2:
        raise ValueError("cross comparisons need images of at least two subjects")
    all_per_subject = np.bincount(subjects, minlength=subject_count)
    kept = np.flatnonzero(acquired)
    v, s = vectors[kept], subjects[kept]
    per_subject = np.bincount(s, minlength=subject_count)
    n = len(kept)
    mated_total = _pairs_within(per_subject)
    non_mated = np.empty(n * (n - 1) // 2 - mated_total, dtype=np.float32)
    mated_scores: list[np.ndarray] = []
    mated_subjects: list[np.ndarray] = []
    filled = 0
    for start, scores, upper, same in _upper_triangle(v, s, chunk_rows):
        mated_scores.append(scores[upper & same])
        mated_subjects.append(np.broadcast_to(s[start : start + len(scores), None], same.shape)[upper & same])
        chunk = scores[upper & ~same]
        non_mated[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    tail_size = min(len(non_mated), max(_TAIL_MINIMUM, math.ceil(_TAIL_FACTOR * largest_target * len(non_mated))))
    cut = np.partition(non_mated, len(non_mated) - tail_size)[len(non_mated) - tail_size]
    tail_scores: list[np.ndarray] = []
    tail_pairs: list[np.ndarray] = []
    for start, scores, upper, same in _upper_triangle(v, s, chunk_rows):
        rows, cols = np.nonzero(upper & ~same & (scores >= cut))
        tail_scores.append(scores[rows, cols])
        tail_pairs.append(np.stack([s[start + rows], s[start + 1 + cols]], axis=1))
    tail = np.concatenate(tail_scores)
    tail_order = np.argsort(tail)[::-1]
    mated = np.concatenate(mated_scores)
    mated_order = np.argsort(mated, kind="stable")
    non_mated.sort()
    all_images = len(subjects)
    all_mated = _pairs_within(all_per_subject)
    return CrossComparisons(
        mated=mated[mated_order],
        mated_subject=np.concatenate(mated_subjects)[mated_order],
        non_mated=non_mated,
        tail=tail[tail_order],
        tail_subjects=np.concatenate(tail_pairs)[tail_order],
        acquired_per_subject=per_subject,
        mated_attempted=all_mated,
        non_mated_attempted=all_images * (all_images - 1) // 2 - all_mated,
    )


@dataclass(frozen=True)
class OperatingPoint:
    """One target FMR: its threshold and what it gives on this set."""

    target_fmr: float
    threshold: float
    false_matches: int
    fmr: float
    false_non_matches: int
    fnmr: float
    fnmr_wilson: Interval
    fnmr_bootstrap: Interval | None
    fmr_bootstrap: Interval | None
    threshold_bootstrap: Interval | None
    # ISO/IEC 19795-1 with failures to acquire folded in:
    # FRR = FTA + (1 - FTA) * FNMR and FAR = (1 - FTA) * FMR, FTA over comparisons.
    frr: float
    far: float


@dataclass(frozen=True)
class BootstrapSpread:
    thresholds: np.ndarray
    fnmr: np.ndarray
    fmr_at_fixed: np.ndarray


def subject_bootstrap(
    comparisons: CrossComparisons, targets: tuple[float, ...], fixed: list[float], replicates: int, seed: int
) -> list[BootstrapSpread]:
    """For each target: the threshold, FNMR at it, and FMR at the set's own (fixed)
    threshold, in every replicate of a subject bootstrap."""
    rng = np.random.default_rng(seed)
    subject_count = len(comparisons.acquired_per_subject)
    images = comparisons.acquired_per_subject.astype(np.float64)
    spreads = [BootstrapSpread(np.empty(replicates), np.empty(replicates), np.empty(replicates)) for _ in targets]
    tail = comparisons.tail
    for r in range(replicates):
        drawn = np.bincount(rng.integers(0, subject_count, subject_count), minlength=subject_count).astype(np.float64)
        weighted = drawn * images
        non_mated_weight = (weighted.sum() ** 2 - np.sum(weighted**2)) / 2
        tail_weight = np.cumsum(drawn[comparisons.tail_subjects[:, 0]] * drawn[comparisons.tail_subjects[:, 1]])
        mated_weight = drawn[comparisons.mated_subject]
        mated_cumulative = np.concatenate([[0.0], np.cumsum(mated_weight)])
        for spread, target, own in zip(spreads, targets, fixed):
            allowed = target * non_mated_weight
            k = int(np.searchsorted(tail_weight, allowed, side="right"))
            if k < len(tail):
                threshold = float(np.nextafter(np.float32(tail[k]), np.float32(np.inf)))
            elif len(tail) == len(comparisons.non_mated):
                threshold = -math.inf
            else:
                raise RuntimeError("bootstrap replicate reached past the kept non-mated tail; raise _TAIL_FACTOR")
            below = count_below(comparisons.mated, threshold)
            spread.thresholds[r] = threshold
            spread.fnmr[r] = mated_cumulative[below] / max(mated_cumulative[-1], 1.0)
            above_own = int(np.searchsorted(-tail, -np.float32(own), side="right"))
            spread.fmr_at_fixed[r] = (tail_weight[above_own - 1] if above_own else 0.0) / non_mated_weight
    return spreads


def _percentile(values: np.ndarray, confidence: float) -> Interval:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(low), float(high), "subject bootstrap, percentile")


def operating_points(
    comparisons: CrossComparisons, targets: tuple[float, ...], confidence: float, replicates: int, seed: int
) -> list[OperatingPoint]:
    thresholds = [threshold_at(comparisons.non_mated, t) for t in targets]
    spreads = (
        subject_bootstrap(comparisons, targets, thresholds, replicates, seed) if replicates else [None] * len(targets)
    )
    n_mated, n_non_mated = len(comparisons.mated), len(comparisons.non_mated)
    fta_mated = 1 - n_mated / comparisons.mated_attempted if comparisons.mated_attempted else 0.0
    fta_non_mated = 1 - n_non_mated / comparisons.non_mated_attempted if comparisons.non_mated_attempted else 0.0
    points = []
    for target, threshold, spread in zip(targets, thresholds, spreads):
        false_matches = count_at_or_above(comparisons.non_mated, threshold)
        false_non_matches = count_below(comparisons.mated, threshold)
        fmr = false_matches / n_non_mated if n_non_mated else 0.0
        fnmr = false_non_matches / n_mated if n_mated else 0.0
        points.append(
            OperatingPoint(
                target_fmr=target,
                threshold=threshold,
                false_matches=false_matches,
                fmr=fmr,
                false_non_matches=false_non_matches,
                fnmr=fnmr,
                fnmr_wilson=wilson(false_non_matches, n_mated, confidence),
                fnmr_bootstrap=_percentile(spread.fnmr, confidence) if spread else None,
                fmr_bootstrap=_percentile(spread.fmr_at_fixed, confidence) if spread else None,
                threshold_bootstrap=_percentile(spread.thresholds, confidence) if spread else None,
                frr=fta_mated + (1 - fta_mated) * fnmr,
                far=(1 - fta_non_mated) * fmr,
            )
        )
    return points


def equal_error_rate(mated_ascending: np.ndarray, non_mated_ascending: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where FNMR and FMR cross, linear between neighbouring thresholds."""
    candidates = np.unique(np.concatenate([mated_ascending, [np.inf]]))
    fnmr = np.searchsorted(mated_ascending, candidates, side="left") / len(mated_ascending)
    fmr = 1 - np.searchsorted(non_mated_ascending, candidates, side="left") / len(non_mated_ascending)
    i = int(np.argmax(fnmr >= fmr))
    if i == 0:
        return float(fnmr[0]), float(candidates[0])
    d0, d1 = fmr[i - 1] - fnmr[i - 1], fmr[i] - fnmr[i]
    w = d0 / (d0 - d1)
    eer = fnmr[i - 1] + w * (fnmr[i] - fnmr[i - 1])
    threshold = candidates[i - 1] + w * (min(candidates[i], 1.0) - candidates[i - 1])
    return float(eer), float(threshold)


def det_curve(mated_ascending: np.ndarray, non_mated_ascending: np.ndarray, points: int = 400) -> np.ndarray:
    """(points, 2) of (FMR, FNMR) from FMR = 1/N up to 1, evenly on a log scale."""
    n = len(non_mated_ascending)
    fmr_grid = np.logspace(math.log10(1 / n), 0, points)
    thresholds = [threshold_at(non_mated_ascending, f) for f in fmr_grid]
    return np.array(
        [
            (count_at_or_above(non_mated_ascending, t) / n, count_below(mated_ascending, t) / len(mated_ascending))
            for t in thresholds
        ]
    )


@dataclass(frozen=True)
class FoldAccuracy:
    """LFW protocol: threshold chosen on the other folds, accuracy on the held-out one."""

    accuracies: list[float]
    thresholds: list[float]
    mean: float
    std: float


def _best_threshold(scores: np.ndarray, mated: np.ndarray) -> float:
    order = np.argsort(scores)
    s, m = scores[order], mated[order]
    # Threshold between position k-1 and k: pairs below are called non-mated.
    non_mated_below = np.concatenate([[0], np.cumsum(~m)])
    mated_at_or_above = np.concatenate([[0], np.cumsum(m[::-1])])[::-1]
    correct = non_mated_below + mated_at_or_above
    k = int(np.argmax(correct))
    finite = s[np.isfinite(s)]
    if k == 0:
        return float(finite[0]) if len(finite) else 0.0
    if k == len(s):
        return float(np.nextafter(np.float32(s[-1]), np.float32(np.inf)))
    return float((s[k - 1] + s[k]) / 2) if np.isfinite(s[k - 1]) else float(s[k])


def fold_accuracy(scores: np.ndarray, mated: np.ndarray, fold: np.ndarray) -> FoldAccuracy:
    """``scores`` are of the listed pairs; a pair with an unacquired image scores -inf
    (decided "no match", as a gate would)."""
    accuracies, thresholds = [], []
    for f in range(int(fold.max()) + 1):
        train, test = fold != f, fold == f
        threshold = _best_threshold(scores[train], mated[train])
        decided = scores[test] >= threshold
        accuracies.append(float(np.mean(decided == mated[test])))
        thresholds.append(threshold)
    return FoldAccuracy(accuracies, thresholds, float(np.mean(accuracies)), float(np.std(accuracies)))


@dataclass(frozen=True)
class IdentificationPoint:
    target_fpir: float
    threshold: float
    false_positives: int
    fpir: float
    misses: int
    fnir: float
    fnir_wilson: Interval


@dataclass(frozen=True)
class Identification:
    """Open-set 1:N: one enrolment image per subject that has several; the rest of
    their images are mated searches; subjects with a single image are never enrolled
    and their images are non-mated searches. Rank-1 and FNIR count a mated search
    whose probe failed to acquire as a miss."""

    gallery: int
    mated_searches: int
    non_mated_searches: int
    mated_fta: int
    non_mated_fta: int
    not_enrolled: int
    rank1: float
    rank1_wilson: Interval
    points: list[IdentificationPoint]


def identification(
    vectors: np.ndarray,
    subjects: np.ndarray,
    acquired: np.ndarray,
    targets: tuple[float, ...],
    confidence: float,
    chunk_rows: int,
) -> Identification:
    subject_count = int(subjects.max()) + 1
    images_per_subject = np.bincount(subjects, minlength=subject_count)
    gallery_of: dict[int, int] = {}
    for i in np.flatnonzero(acquired):
        subject = int(subjects[i])
        if images_per_subject[subject] > 1 and subject not in gallery_of:
            gallery_of[subject] = int(i)
    if not gallery_of:
        raise ValueError("1:N needs a subject with two or more acquired images")
    enrolled = np.zeros(subject_count, dtype=bool)
    enrolled[list(gallery_of)] = True
    gallery_images = np.array(list(gallery_of.values()), dtype=np.int64)
    gallery_subjects = np.array(list(gallery_of), dtype=np.int64)
    in_gallery = np.zeros(len(subjects), dtype=bool)
    in_gallery[gallery_images] = True
    single = images_per_subject[subjects] == 1
    mated = ~in_gallery & enrolled[subjects]
    non_mated = single
    not_enrolled = int(np.sum(~single & ~enrolled[subjects]))
    probes = np.flatnonzero((mated | non_mated) & acquired)
    top_score = np.full(len(subjects), -np.inf, dtype=np.float32)
    top_subject = np.full(len(subjects), -1, dtype=np.int64)
    gallery = vectors[gallery_images]
    for start in range(0, len(probes), chunk_rows):
        chunk = probes[start : start + chunk_rows]
        scores = vectors[chunk] @ gallery.T
        best = np.argmax(scores, axis=1)
        top_score[chunk] = scores[np.arange(len(chunk)), best]
        top_subject[chunk] = gallery_subjects[best]
    mated_total = int(mated.sum())
    hit = mated & (top_subject == subjects)
    non_mated_top = np.sort(top_score[non_mated & acquired])
    points = []
    for target in targets if len(non_mated_top) else ():
        threshold = threshold_at(non_mated_top, target)
        misses = int(mated_total - np.sum(hit & (top_score >= threshold)))
        false_positives = count_at_or_above(non_mated_top, threshold)
        points.append(
            IdentificationPoint(
                target_fpir=target,
                threshold=threshold,
                false_positives=false_positives,
                fpir=false_positives / len(non_mated_top),
                misses=misses,
                fnir=misses / mated_total if mated_total else math.nan,
                fnir_wilson=wilson(misses, mated_total, confidence),
            )
        )
    hits = int(hit.sum())
    return Identification(
        gallery=len(gallery_images),
        mated_searches=mated_total,
        non_mated_searches=int(non_mated.sum()),
        mated_fta=int(np.sum(mated & ~acquired)),
        non_mated_fta=int(np.sum(non_mated & ~acquired)),
        not_enrolled=not_enrolled,
        rank1=hits / mated_total if mated_total else math.nan,
        rank1_wilson=wilson(hits, mated_total, confidence),
        points=points,
    )
