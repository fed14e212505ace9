"""Side by side with face_recognition (dlib): the same pairs, one process and one thread each.

    make peer-venv                                  # once: the peer's own environment
    .venv/bin/python -m benchmarks.peer [--per-fold 10] [--out DIR]

The pairs are the first ``--per-fold`` mated and non-mated pairs of every fold
of ``../shared/data/lfw-dev`` when it is present, else every pair of the
face_recognition sdist photos. Our pipeline runs in this process (the face
engine, as the server uses it, one ONNX Runtime thread); the peer runs in its
own process from ``benchmarks/.peer-venv`` (``benchmarks/peer_worker.py``),
after ours, so the two never compete for the CPU. For each a verification is
image bytes in memory to a score, both images processed; reported are the
median and p90 time per verification, the ratio of the two, and accuracy on
the same pairs at each system's usual threshold and at the best threshold for
these pairs (optimistic: chosen on the pairs it is scored on). A pair with an
image in which a system finds no face counts as "no match" for that system.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np

from benchmarks.reporting import latency_summary, provenance, run_dir, write_json
from verifier.app import build_service
from verifier.config import REPO_ROOT, get_settings
from verifier.errors import VerifierError
from verifier.evaluation.datasets import load_set
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest
from verifier.pipeline import Selection

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402 - the backend must be chosen first

log = logging.getLogger("peer")

LFW_DEV = REPO_ROOT.parent / "shared" / "data" / "lfw-dev"
PEER_PYTHON = REPO_ROOT / "benchmarks" / ".peer-venv" / "bin" / "python"
PEER_WORKER = REPO_ROOT / "benchmarks" / "peer_worker.py"
# face_recognition.compare_faces's default tolerance: a distance at or below it is a match.
PEER_THRESHOLD = 0.6
SPEED_TARGET = 10.0
# One thread in the peer's process: dlib and any BLAS under it.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# The sdist photos that show a face (32bit.png is obama2.jpg with an alpha channel).
SDIST_PEOPLE = {"obama.jpg": "obama", "obama2.jpg": "obama", "obama3.jpg": "obama", "biden.jpg": "biden"}
PEER_SECONDS_PER_PAIR_LIMIT = 30.0


@dataclass(frozen=True)
class PairSet:
    name: str
    pairs: list[tuple[Path, Path]]
    mated: np.ndarray


@dataclass(frozen=True)
class SystemRun:
    """One system over all pairs: a score per pair (higher is more alike; None
    when a face was not found), milliseconds per pair, CPU and wall seconds."""

    name: str
    scores: list[float | None]
    milliseconds: list[float]
    cpu_s: float
    wall_s: float
    versions: dict[str, str]


def lfw_pairs(root: Path, per_fold: int) -> PairSet:
    """The first ``per_fold`` mated and ``per_fold`` non-mated pairs of each fold."""
    labeled = load_set(root)
    listed = labeled.pairs
    if listed is None:
        raise SystemExit(f"{root} lists no pairs")
    chosen = [
        int(i)
        for fold in range(listed.folds)
        for mated in (True, False)
        for i in np.flatnonzero((listed.fold == fold) & (listed.mated == mated))[:per_fold]
    ]
    return PairSet(
        f"LFW dev folds 1-{listed.folds}, first {per_fold} mated and {per_fold} non-mated pairs per fold",
        [(labeled.path(int(listed.first[i])), labeled.path(int(listed.second[i]))) for i in chosen],
        listed.mated[chosen],
    )


def sdist_pairs() -> PairSet:
    settings = get_settings()
    paths = fetch_asset(load_manifest(settings.models.manifest).assets["face-recognition-photos"], settings.models.cache_dir)
    pairs = list(itertools.combinations(sorted(SDIST_PEOPLE), 2))
    return PairSet(
        "face_recognition sdist photos, every pair",
        [(paths[a], paths[b]) for a, b in pairs],
        np.array([SDIST_PEOPLE[a] == SDIST_PEOPLE[b] for a, b in pairs]),
    )


def run_ours(pairs: list[tuple[Path, Path]], warmup: int) -> tuple[SystemRun, float]:
    """Our engine on one thread; returns the run and the operating threshold."""
    settings = get_settings().model_copy(deep=True)
    settings.models.intra_op_threads = 1
    settings.models.idle_intra_op_threads = 1
    settings.pipeline.image_workers = 0
    cv2.setNumThreads(1)
    service = build_service(settings)
    images = [(a.read_bytes(), b.read_bytes()) for a, b in pairs]

    def verify(a: bytes, b: bytes) -> float | None:
        results = service.engine.analyse_batch([a, b], Selection.CENTRE)
        if any(isinstance(r, VerifierError) for r in results):
            return None
        return service.matcher.decide(results[0].template, results[1].template).score

    for a, b in images[:warmup]:
        verify(a, b)
    scores, milliseconds = [], []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for a, b in images:
        start = time.perf_counter()
        scores.append(verify(a, b))
        milliseconds.append((time.perf_counter() - start) * 1000.0)
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    run = SystemRun("verifier", scores, milliseconds, cpu, wall, {"model": service.model_id})
    return run, service.matcher.threshold.value


def run_peer(pairs: list[tuple[Path, Path]], warmup: int, python: Path) -> SystemRun:
    """face_recognition in its own process and environment, one thread."""
    job = json.dumps({"pairs": [[str(a), str(b)] for a, b in pairs], "warmup": warmup})
    done = subprocess.run(
        [str(python), str(PEER_WORKER)], input=job, capture_output=True, text=True, check=False,
        env={**os.environ, **ONE_THREAD_ENV}, timeout=PEER_SECONDS_PER_PAIR_LIMIT * (len(pairs) + warmup),
    )
    if done.returncode != 0:
        raise RuntimeError(f"the peer worker failed ({done.returncode}):\n{done.stderr[-2000:]}")
    answer = json.loads(done.stdout)
    results = answer["results"]
    return SystemRun(
        "face_recognition (dlib)",
        # A distance, lower is more alike: negated so that every score reads the same way.
        [None if r["distance"] is None else -r["distance"] for r in results],
        [r["ms"] for r in results],
        answer["cpu_s"],
        answer["wall_s"],
        answer["versions"],
    )


def accuracy(scores: list[float | None], mated: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy at ``threshold`` and at the best threshold for these pairs; a
    pair without a face anywhere is decided "no match"."""
    values = np.array([-np.inf if s is None else s for s in scores])
    candidates = np.unique(values[np.isfinite(values)])
    if candidates.size == 0:
        candidates = np.array([threshold])
    per_candidate = ((values[None, :] >= candidates[:, None]) == mated[None, :]).mean(axis=1)
    best = int(np.argmax(per_candidate))
    return {
        "threshold": threshold,
        "accuracy": float(np.mean((values >= threshold) == mated)),
        "best_threshold": float(candidates[best]),
        "best_accuracy": float(per_candidate[best]),
        "pairs_without_face": sum(s is None for s in scores),
    }


def _plot(ours: SystemRun, peer: SystemRun, path: Path) -> None:
    figure, ax = plt.subplots(figsize=(7, 2.8))
    ax.boxplot([peer.milliseconds, ours.milliseconds], orientation="horizontal", tick_labels=[peer.name, ours.name], whis=(5, 95))
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds per verification (two images), one thread")
    ax.grid(True, which="both", axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks.peer", description=__doc__.splitlines()[0])
    parser.add_argument("--per-fold", type=int, default=10, help="mated and non-mated LFW pairs taken from each fold")
    parser.add_argument("--lfw", type=Path, default=LFW_DEV, help="LFW-layout folder (default: ../shared/data/lfw-dev)")
    parser.add_argument("--warmup", type=int, default=2, help="pairs run untimed first by each system")
    parser.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/<timestamp>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.peer_python.exists():
        print(f"error: {args.peer_python} is missing: run `make peer-venv` first", file=sys.stderr)
        return 2
    pair_set = lfw_pairs(args.lfw, args.per_fold) if (args.lfw / "pairs.txt").exists() else sdist_pairs()
    log.info("%d pairs: %s", len(pair_set.pairs), pair_set.name)
    ours, our_threshold = run_ours(pair_set.pairs, args.warmup)
    log.info("ours done in %.1f s; running the peer", ours.wall_s)
    peer = run_peer(pair_set.pairs, args.warmup, args.peer_python)
    systems = {
        "ours": (ours, accuracy(ours.scores, pair_set.mated, our_threshold)),
        # At or below 0.6 in distance is at or above -0.6 in negated distance.
        "peer": (peer, accuracy(peer.scores, pair_set.mated, -PEER_THRESHOLD)),
    }
    ratio_median = float(np.median(peer.milliseconds) / np.median(ours.milliseconds))
    ratio_mean = float(np.mean(peer.milliseconds) / np.mean(ours.milliseconds))
    out = run_dir(args.out)
    write_json(out / "peer.json", {
        "provenance": provenance(),
        "pairs": {"source": pair_set.name, "count": len(pair_set.pairs), "mated": int(pair_set.mated.sum())},
        "systems": {
            key: {
                "name": run.name,
                "versions": run.versions,
                "milliseconds": latency_summary(run.milliseconds),
                "cpu_per_wall": run.cpu_s / run.wall_s,
                "accuracy": acc,
            }
            for key, (run, acc) in systems.items()
        },
        "speedup_median": ratio_median,
        "speedup_mean": ratio_mean,
        "target": {"speedup_at_least": SPEED_TARGET, "met": ratio_median >= SPEED_TARGET},
        "per_pair": [
            {"a": str(a), "b": str(b), "mated": bool(m), "ours_score": o, "ours_ms": om,
             "peer_distance": None if p is None else -p, "peer_ms": pm}
            for (a, b), m, o, om, p, pm in zip(
                pair_set.pairs, pair_set.mated, ours.scores, ours.milliseconds, peer.scores, peer.milliseconds
            )
        ],
    })
    _plot(ours, peer, out / "peer.png")
    print(f"{len(pair_set.pairs)} pairs ({int(pair_set.mated.sum())} mated): {pair_set.name}")
    print(f"{'system':24s} {'median ms':>9s} {'p90 ms':>8s} {'cpu/wall':>8s} {'acc':>6s} {'at':>7s} "
          f"{'best acc':>8s} {'at':>7s} {'no face':>7s}")
    for run, acc in systems.values():
        shown = -1.0 if run is peer else 1.0
        print(
            f"{run.name:24s} {np.median(run.milliseconds):9.1f} {np.percentile(run.milliseconds, 90):8.1f} "
            f"{run.cpu_s / run.wall_s:8.2f} {acc['accuracy']:6.1%} {shown * acc['threshold']:7.3f} "
            f"{acc['best_accuracy']:8.1%} {shown * acc['best_threshold']:7.3f} {acc['pairs_without_face']:7d}"
        )
    verdict = "met" if ratio_median >= SPEED_TARGET else "MISSED"
    print(f"[{verdict}] ours is {ratio_median:.1f}x faster per verification (median; mean {ratio_mean:.1f}x), "
          f"target >= {SPEED_TARGET:g}x")
    print("thresholds: ours cosine similarity (match at or above), face_recognition distance (match at or below)")
    print(f"ours: {ours.versions}; peer: {peer.versions}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
