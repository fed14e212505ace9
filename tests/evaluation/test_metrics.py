"""Metrics on real scores: the mini LFW and folder sets through the real pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from verifier.config import Settings
from verifier.evaluation.cache import SetTemplates
from verifier.evaluation.datasets import LabeledSet
from verifier.evaluation.metrics import (
    CrossComparisons,
    count_at_or_above,
    count_below,
    cross_comparisons,
    equal_error_rate,
    fold_accuracy,
    identification,
    operating_points,
    threshold_at,
    wilson,
)

TARGETS = (1e-1, 1e-2, 1e-3)


@pytest.fixture(scope="module")
def scores(mini_lfw_set: LabeledSet, mini_lfw_templates: SetTemplates) -> CrossComparisons:
    return cross_comparisons(
        mini_lfw_templates.vectors, mini_lfw_set.subjects, mini_lfw_templates.acquired, 1024, max(TARGETS)
    )


def test_every_pair_is_scored_once_whatever_the_chunk_size(
    mini_lfw_set: LabeledSet, mini_lfw_templates: SetTemplates, scores: CrossComparisons
) -> None:
    small = cross_comparisons(
        mini_lfw_templates.vectors, mini_lfw_set.subjects, mini_lfw_templates.acquired, 7, max(TARGETS)
    )
    # Other chunk shapes sum in another order: the last bits of float32 may differ.
    np.testing.assert_allclose(small.non_mated, scores.non_mated, atol=1e-6)
    np.testing.assert_allclose(small.mated, scores.mated, atol=1e-6)
    n = int(mini_lfw_templates.acquired.sum())
    assert len(scores.mated) + len(scores.non_mated) == n * (n - 1) // 2
    vectors = mini_lfw_templates.vectors
    subjects = mini_lfw_set.subjects
    brute = [float(vectors[i] @ vectors[j]) for i in range(n) for j in range(i + 1, n) if subjects[i] == subjects[j]]
    np.testing.assert_allclose(np.sort(brute), scores.mated, atol=1e-5)
    assert np.all(np.diff(scores.non_mated) >= 0) and np.all(np.diff(scores.tail) <= 0)


def test_the_threshold_is_the_lowest_that_keeps_fmr_at_or_below_the_target(scores: CrossComparisons) -> None:
    n = len(scores.non_mated)
    for target in TARGETS:
        threshold = threshold_at(scores.non_mated, target)
        assert count_at_or_above(scores.non_mated, threshold) <= math.floor(target * n)
        lower = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
        assert count_at_or_above(scores.non_mated, lower) > math.floor(target * n)


def test_fnmr_grows_as_the_target_fmr_shrinks(settings: Settings, scores: CrossComparisons) -> None:
    points = operating_points(scores, TARGETS, 0.95, 200, 1)
    fnmr = [p.fnmr for p in points]
    assert fnmr == sorted(fnmr) and [p.threshold for p in points] == sorted(p.threshold for p in points)
    for p in points:
        assert p.fmr <= p.target_fmr and p.false_non_matches == count_below(scores.mated, p.threshold)
        assert p.fnmr_wilson.low <= p.fnmr <= p.fnmr_wilson.high
        assert p.fnmr_bootstrap is not None and p.fnmr_bootstrap.low <= p.fnmr_bootstrap.high
        assert p.threshold_bootstrap is not None and p.threshold_bootstrap.low <= p.threshold <= p.threshold_bootstrap.high
        assert p.frr == p.fnmr and p.far == p.fmr  # every image acquired
    assert operating_points(scores, TARGETS, 0.95, 200, 1) == points, "a fixed seed repeats"
    assert operating_points(scores, TARGETS, 0.95, 0, 1)[0].fnmr_bootstrap is None


def test_failures_to_acquire_are_folded_into_frr(mini_lfw_set: LabeledSet, mini_lfw_templates: SetTemplates) -> None:
    acquired = mini_lfw_templates.acquired.copy()
    acquired[np.flatnonzero(np.bincount(mini_lfw_set.subjects)[mini_lfw_set.subjects] > 1)[:3]] = False
    lost = cross_comparisons(mini_lfw_templates.vectors, mini_lfw_set.subjects, acquired, 1024, 0.1)
    assert lost.mated_attempted > len(lost.mated) and lost.non_mated_attempted > len(lost.non_mated)
    (point,) = operating_points(lost, (1e-2,), 0.95, 0, 1)
    fta = 1 - len(lost.mated) / lost.mated_attempted
    assert point.frr == pytest.approx(fta + (1 - fta) * point.fnmr) and point.frr > point.fnmr


def test_the_eer_is_where_fmr_meets_fnmr(scores: CrossComparisons) -> None:
    eer, threshold = equal_error_rate(scores.mated, scores.non_mated)
    fnmr = count_below(scores.mated, threshold) / len(scores.mated)
    fmr = count_at_or_above(scores.non_mated, threshold) / len(scores.non_mated)
    step = 1 / len(scores.mated)
    assert 0 <= eer < 0.1
    assert abs(fnmr - eer) <= step and abs(fmr - eer) <= step + 0.01


def test_wilson_matches_the_textbook_interval() -> None:
    interval = wilson(10, 100, 0.95)
    assert interval.low == pytest.approx(0.0552, abs=5e-4) and interval.high == pytest.approx(0.1744, abs=5e-4)
    assert wilson(0, 100, 0.95).low == 0.0
    assert wilson(10, 1000, 0.95).high - wilson(10, 1000, 0.95).low < interval.high - interval.low


def test_protocol_accuracy_on_the_listed_pairs(mini_lfw_set: LabeledSet, mini_lfw_templates: SetTemplates) -> None:
    pairs = mini_lfw_set.pairs
    assert pairs is not None
    vectors = mini_lfw_templates.vectors
    scores = np.einsum("ij,ij->i", vectors[pairs.first], vectors[pairs.second])
    folds = fold_accuracy(scores, pairs.mated, pairs.fold)
    assert len(folds.accuracies) == 2 and folds.mean > 0.9
    failed = scores.copy()
    failed[pairs.mated] = -np.inf
    assert fold_accuracy(failed, pairs.mated, pairs.fold).mean <= 0.5 + 1e-9


def test_open_set_identification(
    mini_folder_set: LabeledSet, mini_folder_templates: SetTemplates
) -> None:
    ident = identification(
        mini_folder_templates.vectors, mini_folder_set.subjects, mini_folder_templates.acquired, (0.5, 0.1), 0.95, 4
    )
    assert ident.gallery == 8 and ident.non_mated_searches == 10
    assert ident.mated_searches == 8 * 2 + 1 and ident.mated_fta == 1
    assert ident.rank1 >= 15 / 17
    loose, strict = ident.points
    assert loose.fpir <= 0.5 and strict.fpir <= 0.1
    hits = round(ident.rank1 * ident.mated_searches)
    assert strict.threshold >= loose.threshold and strict.misses >= loose.misses >= ident.mated_searches - hits
