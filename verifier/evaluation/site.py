"""Site calibration from non-mated scores: thresholds from a site's own captures.

Input: captures of different travellers, one each (a folder, one file a
traveller). Every pair is a non-mated comparison; no other label is needed.
For each target FMR the threshold is the lowest at which a one-sided
Clopper-Pearson upper bound on the FMR, from the false matches that remain
among the n comparisons, is at or below the target: the largest k false
matches with P(X <= k | n, target) <= 1 - confidence. With none false the
bound is 1 - (1 - confidence)^(1/n), about 3/n at 95 % (the rule of three):
the lowest FMR n comparisons can support. The bound treats comparisons as
independent; they are not (every capture is in m - 1 of them), so it is
narrower than the truth, which is why the README measures the result on
people the calibration never saw.

For each target FPIR and gallery size G (at most half the captures), a seeded
random gallery of G captures is searched by every other capture (m - G non-
mated searches, the top score of each), with the same bound on FPIR.

The same traveller twice cannot be known without labels; what can be seen is
two captures scoring at or above ``duplicate_score`` (a second photo of one
person, or the same photo twice). Such pairs stop the calibration, named,
unless the caller drops the later capture of each (``drop_near_duplicates``);
a second capture of a traveller that scores below the cut stays in and counts
as a false match, which can only make the thresholds stricter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verifier.bounds import allowed_errors, lowest_supported, upper_bound
from verifier.config import Settings
from verifier.errors import Reason
from verifier.evaluation.datasets import IMAGE_SUFFIXES, LabeledSet, Layout
from verifier.evaluation.metrics import _upper_triangle
from verifier.site_calibration import SiteIdentificationRow, SiteRow
from verifier.templates import TemplateSpec

# Fewer captures than this cannot calibrate even the laxest target in a useful way.
MIN_CAPTURES = 30


class SiteCalibrationError(Exception):
    """Captures that cannot give a site table, and why."""


def _above(score: float) -> float:
    return float(np.nextafter(np.float32(score), np.float32(np.inf)))


def bounded_threshold(descending: np.ndarray, n: int, target: float, confidence: float) -> tuple[float, int, bool]:
    """From the highest of ``n`` non-mated scores (descending): the lowest threshold whose
    bound is at or below ``target``, the errors left at it, and whether the target is
    supported (else the threshold is above every score)."""
    allowed = allowed_errors(n, target, confidence)
    if allowed is None:
        return _above(descending[0]), 0, False
    if allowed >= len(descending):
        raise ValueError(f"{len(descending)} highest scores kept; {allowed + 1} needed for {target:g}")
    threshold = _above(descending[allowed])
    return threshold, int(np.count_nonzero(descending >= np.float32(threshold))), True


def non_mated_tail(vectors: np.ndarray, keep: int, chunk_rows: int) -> tuple[np.ndarray, int]:
    """The ``keep`` highest scores of all pairs i < j (descending), and the number of pairs."""
    n = len(vectors)
    every = np.arange(n)
    tail = np.empty(0, dtype=np.float32)
    for _, scores, upper, _same in _upper_triangle(vectors, every, chunk_rows):
        chunk = np.concatenate([tail, scores[upper]])
        tail = chunk if len(chunk) <= keep else np.partition(chunk, len(chunk) - keep)[len(chunk) - keep:]
    return np.sort(tail)[::-1], n * (n - 1) // 2


def near_duplicates(vectors: np.ndarray, cut: float, chunk_rows: int) -> list[tuple[int, int, float]]:
    """Pairs i < j scoring at or above ``cut``."""
    found: list[tuple[int, int, float]] = []
    for start, scores, upper, _same in _upper_triangle(vectors, np.arange(len(vectors)), chunk_rows):
        rows, cols = np.nonzero(upper & (scores >= cut))
        found.extend((start + int(r), start + 1 + int(c), float(scores[r, c])) for r, c in zip(rows, cols))
    return found


def fmr_rows(vectors: np.ndarray, targets: Sequence[float], confidence: float, chunk_rows: int) -> tuple[
        list[SiteRow], int]:
    n = len(vectors) * (len(vectors) - 1) // 2
    if n < 1:
        raise SiteCalibrationError(f"{len(vectors)} templates make no comparison")
    keep = min(n, max(math.ceil(max(targets) * n) + 2, 16))
    tail, n = non_mated_tail(vectors, keep, chunk_rows)
    rows = []
    for target in sorted(targets, reverse=True):
        threshold, errors, supported = bounded_threshold(tail, n, target, confidence)
        rows.append(SiteRow(target, threshold, errors, upper_bound(errors, n, confidence), supported))
    return rows, n


def fpir_rows(vectors: np.ndarray, targets: Sequence[float], gallery_sizes: Sequence[int], confidence: float,
              seed: int) -> list[SiteIdentificationRow]:
    """1:N rows for each gallery size at most half the captures (the rest search it)."""
    rows = []
    rng = np.random.default_rng(seed)
    for size in sorted(g for g in set(gallery_sizes) if 1 <= g <= len(vectors) // 2):
        order = rng.permutation(len(vectors))
        gallery, probes = vectors[order[:size]], vectors[order[size:]]
        top = np.sort((probes @ gallery.T).max(axis=1))[::-1]
        for target in sorted(targets, reverse=True):
            threshold, errors, supported = bounded_threshold(top, len(top), target, confidence)
            rows.append(SiteIdentificationRow(target, size, threshold, errors, len(top),
                                              upper_bound(errors, len(top), confidence), supported))
    return rows


def capture_set(folder: Path) -> LabeledSet:
    """A folder of one capture per traveller as a set where every image is its own subject."""
    if not folder.is_dir():
        raise SiteCalibrationError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    nested = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if nested:
        raise SiteCalibrationError(
            f"{folder} holds sub-folders ({', '.join(nested[:3])}{', ...' if len(nested) > 3 else ''}): a site "
            "calibration takes one capture per traveller, every file directly in the folder, one traveller each "
            "(an identity-per-folder set has people in it twice)")
    if len(files) < MIN_CAPTURES:
        raise SiteCalibrationError(f"{folder} holds {len(files)} captures ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                                   f"a site calibration needs at least {MIN_CAPTURES}, and thousands to support "
                                   "FMR 1e-4 (n captures give n(n-1)/2 comparisons, supporting FMR >= 3 / that)")
    keys = tuple(p.name for p in files)
    return LabeledSet(folder.name, folder, Layout.FOLDERS, folder, keys, np.arange(len(keys)), keys, None)


@dataclass(frozen=True)
class Captures:
    """What was kept of a capture set, and what was not."""

    vectors: np.ndarray
    keys: tuple[str, ...]
    failures: dict[str, int]
    unreadable: tuple[str, ...]
    duplicates: tuple[tuple[str, str, float], ...]


# Failures that say the file is not an image the service takes (not that it holds no usable face).
UNREADABLE = frozenset(r.value for r in (Reason.IMAGE_EMPTY, Reason.IMAGE_TOO_LARGE, Reason.IMAGE_TOO_SMALL,
                                         Reason.IMAGE_UNDECODABLE, Reason.IMAGE_FORMAT_UNSUPPORTED))


def keep_captures(keys: Sequence[str], vectors: np.ndarray, acquired: np.ndarray, failures: dict[int, str],
                  duplicate_score: float, drop_near_duplicates: bool, skip_unreadable: bool,
                  chunk_rows: int) -> Captures:
    """The acquired captures, less near-duplicates when asked; refuses unreadable files
    (unless skipped) and near-duplicates (unless dropped), naming them."""
    unreadable = tuple(keys[i] for i, reason in sorted(failures.items()) if reason in UNREADABLE)
    if unreadable and not skip_unreadable:
        raise SiteCalibrationError(
            f"{len(unreadable)} files are not images the service decodes: {', '.join(unreadable[:5])}"
            f"{', ...' if len(unreadable) > 5 else ''} (remove them, or pass --skip-unreadable)")
    counts: dict[str, int] = {}
    for reason in failures.values():
        counts[reason] = counts.get(reason, 0) + 1
    kept = np.flatnonzero(acquired)
    pairs = near_duplicates(vectors[kept], duplicate_score, chunk_rows)
    named = tuple((keys[kept[i]], keys[kept[j]], score) for i, j, score in pairs)
    if named and not drop_near_duplicates:
        shown = "; ".join(f"{a} and {b} ({score:.3f})" for a, b, score in named[:5])
        raise SiteCalibrationError(
            f"{len(named)} pairs of captures score at or above {duplicate_score:g}, as one traveller's twice would: "
            f"{shown}{'; ...' if len(named) > 5 else ''}. Remove one of each (one capture per traveller), or pass "
            "--drop-near-duplicates to leave out the later of each pair")
    dropped = {j for _, j, _ in pairs}
    kept = np.array([k for pos, k in enumerate(kept) if pos not in dropped], dtype=np.int64)
    return Captures(vectors[kept], tuple(keys[k] for k in kept), counts, unreadable, named)


# Sources of templates already held, one per person: no image is read.
STORE_SOURCES = ("watchlists", "registry")


def stored_templates(settings: Settings, source: str, spec: TemplateSpec) -> tuple[tuple[str, ...], np.ndarray, Path]:
    """One template of ``spec``'s model per watch-list subject (live, not expired) or per
    registered traveller, from the configured store opened read-only; keys name store rows only."""
    from verifier.registry.store import RegistryStore
    from verifier.watchlist.index import template_rows
    from verifier.storage.faults import StoreError
    from verifier.watchlist.store import WatchlistStore

    path = settings.watchlist.store_file(settings.data_dir)
    try:
        store = WatchlistStore.open_readonly(path, settings.watchlist.busy_timeout_seconds)
    except StoreError as error:
        raise SiteCalibrationError(f"{source}: {error}") from error
    try:
        if source == "watchlists":
            lists = store.searchable(spec, time.time())[0].values()
            rows = np.concatenate([np.empty(0, np.int64), *(found.rows for found in lists)])
            vectors = np.concatenate([np.empty((0, spec.dimension), np.float32), *(found.vectors for found in lists)])
        else:
            chunks = list(RegistryStore(store).vectors(spec.model_id, spec.dimension))
            rows = template_rows(np.concatenate([np.empty(0, np.int64), *(keys for keys, _ in chunks)]))[0]
            vectors = np.concatenate([np.empty((0, spec.dimension), np.float32), *(v for _, v in chunks)])
    finally:
        store.close()
    _, first = np.unique(rows, return_index=True)
    first.sort()
    return tuple(f"{source} row {rows[i]}" for i in first), np.ascontiguousarray(vectors[first], np.float32), path
