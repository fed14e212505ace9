"""Exact (Clopper-Pearson) one-sided bounds on an error rate from a count of errors.

Used where a rate decides a threshold or an alarm: site calibration (the
highest FMR a count of false matches is consistent with) and drift monitoring
(the lowest live FMR a count is consistent with). Both treat comparisons as
independent trials; comparisons that share a face are not, so the bounds are
narrower than the truth (stated where they are used).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def log_binomial_cdf(n: int, p: float, kmax: int) -> np.ndarray:
    """log P(X <= k) for X ~ Binomial(n, p), k = 0..kmax."""
    if p <= 0.0:
        return np.zeros(kmax + 1)
    if p >= 1.0:
        return np.where(np.arange(kmax + 1) >= n, 0.0, -np.inf)
    k = np.arange(kmax + 1, dtype=np.float64)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log((n - k[1:] + 1) / k[1:]))])
    log_pmf = log_choose + k * math.log(p) + (n - k) * math.log1p(-p)
    return np.logaddexp.accumulate(log_pmf)


def allowed_errors(n: int, target: float, confidence: float) -> int | None:
    """The most errors among ``n`` trials whose one-sided upper bound is at or below
    ``target``: the largest k with P(X <= k | n, target) <= 1 - confidence; None when
    even no error is too many (``n`` too small for the target)."""
    kmax = min(n, math.ceil(n * target) + 1)
    below = np.flatnonzero(log_binomial_cdf(n, target, kmax) <= math.log1p(-confidence))
    return int(below[-1]) if len(below) else None


def _bisect(inside: Callable[[float], bool], low: float, high: float) -> float:
    """The boundary in [low, high] where ``inside`` (true at low) turns false."""
    for _ in range(80):
        middle = (low + high) / 2
        if inside(middle):
            low = middle
        else:
            high = middle
    return high


def upper_bound(k: int, n: int, confidence: float) -> float:
    """One-sided upper bound on a rate from ``k`` errors in ``n`` trials."""
    if n <= 0 or k >= n:
        return 1.0
    alpha = math.log1p(-confidence)
    if k == 0:
        return -math.expm1(alpha / n)
    return _bisect(lambda p: log_binomial_cdf(n, p, k)[-1] > alpha, k / n, 1.0)


def lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided lower bound on a rate from ``k`` errors in ``n`` trials (0 with none)."""
    if n <= 0 or k <= 0:
        return 0.0
    # P(X >= k; p) = 1 - P(X <= k - 1; p) grows with p; the bound is where it reaches 1 - confidence.
    return _bisect(lambda p: log_binomial_cdf(n, p, k - 1)[-1] > math.log(confidence), 0.0, k / n)


def lowest_supported(n: int, confidence: float) -> float:
    """The lowest rate ``n`` trials can support: the bound with no error (about 3/n at 95 %)."""
    return upper_bound(0, n, confidence)


def comparisons_to_detect(target: float, inflation: float, factor: float, confidence: float, power: float) -> int:
    """Non-mated comparisons a monitor needs to see a true rate of ``inflation`` x
    ``target`` with probability ``power``, when it warns only where the lower bound
    (at ``confidence``) exceeds ``factor`` x ``target``."""
    true_rate, line = inflation * target, factor * target

    def detects(n: int) -> bool:
        kmax = min(n, math.ceil(3 * n * true_rate) + 20)
        # The fewest errors whose lower bound clears the line: P(X >= k; line) < 1 - confidence.
        at_line = log_binomial_cdf(n, line, kmax)
        clears = np.flatnonzero(at_line > math.log(confidence))
        if not len(clears):
            return False
        needed = int(clears[0]) + 1
        return -math.expm1(log_binomial_cdf(n, true_rate, needed - 1)[-1]) >= power

    high = 64
    while not detects(high):
        high *= 2
    low = high // 2
    while high - low > max(1, low // 200):
        middle = (low + high) // 2
        if detects(middle):
            high = middle
        else:
            low = middle
    return high
