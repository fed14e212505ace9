"""The registry's duplicate decision at 1M and 10M travellers: the rate at which
newcomers are flagged and the duplicates missed, under the single-face rule
(any face at or above ``registry.duplicate_threshold``) and the calibrated 1:N
decision (:mod:`verifier.registry.duplicates`).

    .venv/bin/python -m benchmarks.duplicates --fit
    .venv/bin/python -m benchmarks.duplicates --tail-synthetic 1000000
    .venv/bin/python -m benchmarks.duplicates --sizes 1000000 10000000

``--fit`` measures the non-mated tails the decision rests on from LFW dev
and prints the ``ScoreTail`` settings: every person with two or more images
registers with two of them (chip, live) and is compared, as a newcomer with
two other draws, against every other person's registration; each pair gives
the fused ``both`` (lower face) and ``either`` (higher face) scores. The fit is
checked against the measured quantiles it did not use.

``--tail-synthetic N`` compares single-comparison non-mated tails: LFW dev
against itself (every pair of different people) and LFW dev against N
synthetic vectors (benchmarks.registry: a Gaussian fitted to the real
embeddings), with the exponential fitted to the top of the real tail.

``--sizes`` builds an exact FAISS index (IndexFlatIP) of N synthetic travellers,
one vector each standing for both stored templates, plus real LFW dev people
planted with two templates (two images; one image twice where the person has
only two or three). Queries are registrations of two faces: a planted person's
other images (a genuine duplicate: both faces distinct from the stored ones
where the person has four or more images, else the remaining ones), and
newcomers: people never planted, two of their images. LFW dev's labels name
a few people twice (DUPLICATE_NAMES); they are counted as one person.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import faiss
import numpy as np

from benchmarks.reporting import append_line, provenance
from benchmarks.registry import LFW_DEV, fit_shape, real_embeddings, synthetic
from verifier.config import get_settings
from verifier.store_config import ScoreTail
from verifier.evaluation.datasets import load_set
from verifier.registry.duplicates import DuplicatePolicy, Outcome, fit_tail, fuse

# LFW dev people filed under two names (one person, or one photograph, seen
# among its highest-scoring "non-mated" pairs): duplicates, not strangers.
DUPLICATE_NAMES = (
    ("Hasan_Wirayuda", "Hassan_Wirajuda"),
    ("Chyung_Dai-chul", "Dai_Chul_Chyung"),
    ("Cristina_Fernandez", "Cristina_Kirchner"),
    ("Gabrielle_Rose", "Martha_Bowen"),
)
# Single-comparison scores at which the tails are compared.
TAIL_GRID = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)
# Share of the non-mated scores the exponential tail is fitted to: the deepest
# that still leaves hundreds of LFW dev pairs above the anchor (557 of the
# fused pairs). The tail lightens with depth (scores are bounded), so the
# deeper the anchor the less the exponential over-predicts beyond it.
EXCEEDANCE = 0.001
QUERY_BATCH = 512


def merged_people(lfw: Path, people: np.ndarray) -> np.ndarray:
    """The person index of every image, one index for the names DUPLICATE_NAMES pairs."""
    names = load_set(lfw).subject_names
    index = {name: i for i, name in enumerate(names)}
    merged = np.asarray(people).copy()
    for first, second in DUPLICATE_NAMES:
        if first in index and second in index:
            merged[merged == index[second]] = index[first]
    return merged


def by_person(people: np.ndarray) -> dict[int, list[int]]:
    rows: dict[int, list[int]] = {}
    for i, person in enumerate(people.tolist()):
        rows.setdefault(person, []).append(i)
    return rows


def non_mated_single(vectors: np.ndarray, people: np.ndarray) -> np.ndarray:
    """Every score between images of different people, sorted."""
    scores = vectors @ vectors.T
    upper = np.triu_indices(len(vectors), 1)
    different = people[upper[0]] != people[upper[1]]
    return np.sort(scores[upper][different])


def survival(sorted_scores: np.ndarray, at: float) -> float:
    return 1.0 - np.searchsorted(sorted_scores, at) / len(sorted_scores)


def fused_non_mated(vectors: np.ndarray, people: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(both, either) of every newcomer against every other person's registration:
    newcomer and registration are two independent draws of two images each."""
    rng = np.random.default_rng(seed)
    multi = [rows for rows in by_person(people).values() if len(rows) >= 2]
    stored = np.array([rng.choice(rows, 2, replace=False) for rows in multi])
    new = np.array([rng.choice(rows, 2, replace=False) for rows in multi])
    # faces[f][i, j]: new face f of person i against person j's best stored template.
    faces = [np.maximum(vectors[new[:, f]] @ vectors[stored[:, 0]].T, vectors[new[:, f]] @ vectors[stored[:, 1]].T)
             for f in (0, 1)]
    off = ~np.eye(len(multi), dtype=bool)
    return np.minimum(*faces)[off], np.maximum(*faces)[off]


def check_fit(scores: np.ndarray, tail: ScoreTail, name: str) -> dict:
    """The fitted tail against measured quantiles beyond the fitted share."""
    ordered = np.sort(scores)
    rows = []
    for share in (EXCEEDANCE / 3, EXCEEDANCE / 10, 10 / len(ordered)):
        at = float(np.quantile(ordered, 1.0 - share))
        rows.append({"score": round(at, 4), "measured": share,
                     "fitted": float(tail.exceedance * np.exp(-(at - tail.anchor) / tail.scale))})
    return {"fused": name, "pairs": len(ordered), "tail": tail.model_dump(), "check": rows}


def fit(vectors: np.ndarray, people: np.ndarray, seed: int, out: Path | None) -> None:
    both, either = fused_non_mated(vectors, people, seed)
    for name, scores in (("both", both), ("either", either)):
        append_line(check_fit(scores, fit_tail(scores, EXCEEDANCE), name), out)


def tail_check(vectors: np.ndarray, people: np.ndarray, count: int, seed: int, out: Path | None) -> None:
    """Single-comparison tails: real against real, real against ``count`` synthetic vectors."""
    real = non_mated_single(vectors, people)
    fitted = fit_tail(real, EXCEEDANCE)
    grid = np.array(TAIL_GRID, dtype=np.float32)
    above = np.zeros(len(grid), dtype=np.int64)
    total = 0
    for _, block in synthetic(count, vectors.shape[1], seed):
        for start in range(0, len(block), QUERY_BATCH * 40):
            scores = vectors @ block[start:start + QUERY_BATCH * 40].T
            above += np.array([(scores >= g).sum() for g in grid])
            total += scores.size
    for g, hits in zip(TAIL_GRID, above.tolist()):
        append_line({"score": g, "real_pairs": len(real), "real": survival(real, g),
                     "synthetic_pairs": total, "synthetic": hits / total,
                     "exponential_fit": float(fitted.exceedance * np.exp(-(g - fitted.anchor) / fitted.scale))}, out)


@dataclass(frozen=True)
class Registrations:
    """Planted travellers' template vectors with their traveller number, and
    two-face queries with the planted traveller each one duplicates (-1: newcomer)."""

    planted: np.ndarray
    planted_traveller: np.ndarray
    faces: np.ndarray  # (queries, 2, dimension)
    expected: np.ndarray


def registrations(vectors: np.ndarray, people: np.ndarray, newcomers: int, seed: int) -> Registrations:
    """Half the people with two or more images planted, the rest newcomers (every
    pair of two of their images, up to ``newcomers`` registrations in all)."""
    rng = np.random.default_rng(seed)
    multi = [list(rng.permutation(rows)) for rows in by_person(people).values() if len(rows) >= 2]
    order = rng.permutation(len(multi))
    planted_people = [multi[i] for i in order[: len(multi) // 2]]
    newcomer_people = [multi[i] for i in order[len(multi) // 2:]]
    planted, owner, faces, expected = [], [], [], []
    for number, rows in enumerate(planted_people):
        stored, query = (rows[:2], rows[2:4]) if len(rows) >= 4 else (rows[:1] * 2, (rows[1:] * 2)[:2])
        planted += [vectors[r] for r in stored]
        owner += [number, number]
        faces.append(vectors[query])
        expected.append(number)
    pairs = [pair for rows in newcomer_people for pair in combinations(rows, 2)]
    for i in rng.permutation(len(pairs))[:newcomers]:
        faces.append(vectors[list(pairs[i])])
        expected.append(-1)
    return Registrations(np.stack(planted), np.array(owner), np.stack(faces), np.array(expected))


def search(size: int, dimension: int, found: Registrations, depth: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, rows) of each query face's ``depth`` nearest templates, over an exact
    index of ``size`` synthetic travellers (row = position) and the planted
    templates (row = size + their traveller number); and the templates indexed."""
    index = faiss.IndexFlatIP(dimension)
    for _, block in synthetic(size, dimension, seed):
        index.add(block)
    index.add(found.planted.astype(np.float32))
    rows_of = np.concatenate([np.arange(size), size + found.planted_traveller])
    queries = found.faces.reshape(-1, dimension).astype(np.float32)
    scores = np.empty((len(queries), depth), dtype=np.float32)
    positions = np.empty((len(queries), depth), dtype=np.int64)
    for start in range(0, len(queries), QUERY_BATCH):
        scores[start:start + QUERY_BATCH], positions[start:start + QUERY_BATCH] = index.search(
            queries[start:start + QUERY_BATCH], depth)
    total = int(index.ntotal)
    del index
    gc.collect()
    shape = (len(found.faces), 2, depth)
    return scores.reshape(shape), rows_of[positions].reshape(shape), total


def measure(size: int, found: Registrations, policy: DuplicatePolicy, single: float, depth: int, seed: int,
            real_single: float) -> dict:
    began = time.perf_counter()
    scores, rows, templates = search(size, found.faces.shape[2], found, depth, seed)
    searched = time.perf_counter() - began
    planted_row = size + found.expected
    newcomer = found.expected < 0
    before_hit = (scores[:, :, 0] >= single).any(axis=1)
    before_right = ((scores >= single) & (rows == planted_row[:, None, None])).any(axis=(1, 2))
    outcomes, rights = [], []
    for query in range(len(found.faces)):
        finding = policy.decide(fuse([(scores[query, f], rows[query, f]) for f in (0, 1)]), templates)
        outcomes.append(finding.outcome)
        rights.append(finding.candidate is not None and finding.candidate.row == planted_row[query])
    outcome = np.array([o.value for o in outcomes])
    right = np.array(rights)
    limits = policy.thresholds(templates)
    travellers = size + int(found.planted_traveller.max()) + 1
    duplicates = int((~newcomer).sum())
    flagged = outcome != Outcome.NONE.value
    return {
        "travellers": travellers, "templates": templates,
        "newcomers": int(newcomer.sum()), "duplicates": duplicates, "search_s": round(searched, 1),
        "before": {"rule": f"any face >= {single}",
                   "newcomers_flagged": float(before_hit[newcomer].mean()),
                   "duplicates_missed": int((~newcomer & ~before_right).sum()),
                   # Two new faces against two stored templates of every traveller.
                   "newcomers_flagged_predicted_from_real_tail": -float(np.expm1(4 * travellers
                                                                                 * np.log1p(-real_single)))},
        "after": {"thresholds": {"certain": round(limits.certain, 4), "refer_both": round(limits.refer_both, 4),
                                 "refer_either": round(limits.refer_either, 4)},
                  "newcomers_certain": float((outcome[newcomer] == Outcome.CERTAIN.value).mean()),
                  "newcomers_referred": float((outcome[newcomer] == Outcome.SUSPECTED.value).mean()),
                  "duplicates_certain": int(((outcome == Outcome.CERTAIN.value) & right)[~newcomer].sum()),
                  "duplicates_referred": int(((outcome == Outcome.SUSPECTED.value) & right)[~newcomer].sum()),
                  "duplicates_missed": int((~(flagged & right))[~newcomer].sum())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit", action="store_true", help="fit and check the fused non-mated tails on LFW dev")
    parser.add_argument("--tail-synthetic", type=int, default=0, help="compare single tails, real against N synthetic")
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    parser.add_argument("--newcomers", type=int, default=3000, help="newcomer registrations at most")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lfw", type=Path, default=LFW_DEV)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=None, help="append each result as a JSON line here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    faiss.omp_set_num_threads(args.threads)
    settings = get_settings().registry
    vectors, people = real_embeddings(args.lfw)
    people = merged_people(args.lfw, people)
    fit_shape(vectors)
    if args.fit:
        fit(vectors, people, args.seed, args.out)
    if args.tail_synthetic:
        tail_check(vectors, people, args.tail_synthetic, args.seed, args.out)
    if not args.sizes:
        return
    found = registrations(vectors, people, args.newcomers, args.seed)
    real_single = survival(non_mated_single(vectors, people), settings.duplicate_threshold)
    policy = DuplicatePolicy(settings)
    for size in args.sizes:
        result = measure(size, found, policy, settings.duplicate_threshold, settings.search_depth, args.seed,
                         real_single)
        append_line({**result, "provenance": provenance()}, args.out)


if __name__ == "__main__":
    main()
