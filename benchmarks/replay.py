"""Document-photo replay detection on LFW dev: APCER per replay type, BPCER on genuine pairs.

    .venv/bin/python -m benchmarks.replay [--photos 500] [--dataset ../shared/data/lfw-dev]

Bona fide: every mated pair of the set (two different photographs of one
person, the live capture and the chip photo of a genuine traveller), each
image through the real pipeline (aligned crops from `verifier eval --quality`'s
cache of the original condition, computed here when absent). Attacks: for
``--photos`` images drawn at random, the photo itself made into each replay
type below, run through the real pipeline (detector, landmarks, alignment)
and compared with the untouched photo as the reference. ISO/IEC 30107-3 terms:
APCER is the share of attacks scored below the threshold (let through),
BPCER the share of bona fide pairs at or above it (flagged as a replay).

LFW holds a few "genuine" pairs that are one photograph twice (cropped or
re-encoded); flagging those is correct, and they are listed in the report.
Writes ``benchmarks/results/replay/<run>/replay.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from benchmarks.reporting import provenance, run_dir, write_json
from verifier.config import get_settings
from verifier.errors import VerifierError
from verifier.evaluation.datasets import load_set
from verifier.evaluation.erc import collect, mated_pairs
from verifier.gate.replay import ReplayDetector
from verifier.pipeline import FaceEngine

SEED = 30107
Attack = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _jpeg(bgr: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def _rotate(bgr: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    h, w = bgr.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
    return cv2.warpAffine(bgr, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def _relight(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gamma = rng.uniform(0.6, 1.6)
    gain = rng.uniform(0.7, 1.3)
    out = 255.0 * (bgr / 255.0) ** gamma * gain + rng.uniform(-20, 20)
    return np.clip(out, 0, 255).astype(np.uint8)


def _noise(bgr: np.ndarray, rng: np.random.Generator, sigma: float = 8.0) -> np.ndarray:
    return np.clip(bgr + rng.normal(0, sigma, bgr.shape), 0, 255).astype(np.uint8)


def _paste(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo, shrunk, in a larger noisy scene (a phone or printout held up in front of the camera)."""
    h, w = bgr.shape[:2]
    scene = np.clip(rng.normal(110, 40, (int(h * 1.8), int(w * 1.8), 3)), 0, 255).astype(np.uint8)
    scene = cv2.GaussianBlur(scene, (0, 0), 6)
    small = cv2.resize(bgr, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    y, x = rng.integers(0, scene.shape[0] - small.shape[0]), rng.integers(0, scene.shape[1] - small.shape[1])
    scene[y:y + small.shape[0], x:x + small.shape[1]] = small
    return scene


def _print(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A printout photographed: perspective tilt, blur, paper's reduced contrast
    and colour cast, sensor noise, re-encoding."""
    h, w = bgr.shape[:2]
    shift = w * 0.06
    source = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    target = source + rng.uniform(-shift, shift, source.shape).astype(np.float32)
    out = cv2.warpPerspective(bgr, cv2.getPerspectiveTransform(source, target), (w, h), borderMode=cv2.BORDER_REFLECT)
    out = cv2.GaussianBlur(out, (0, 0), 0.8)
    out = out * 0.8 + 30 + rng.uniform(-10, 10, 3)
    return _jpeg(_noise(np.clip(out, 0, 255).astype(np.uint8), rng, 4.0), 85)


ATTACKS: dict[str, Attack] = {
    "identical": lambda bgr, rng: bgr,
    "re-encoded (JPEG q50)": lambda bgr, rng: _jpeg(bgr, 50),
    "resized (x0.6)": lambda bgr, rng: cv2.resize(bgr, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA),
    "upscaled (x1.8)": lambda bgr, rng: cv2.resize(bgr, None, fx=1.8, fy=1.8, interpolation=cv2.INTER_CUBIC),
    "cropped": lambda bgr, rng: bgr[20:-15, 25:-10],
    "rotated (+-10 deg)": lambda bgr, rng: _rotate(bgr, rng.choice([-10.0, 10.0])),
    "re-lit": _relight,
    "noised (sigma 8)": lambda bgr, rng: _noise(bgr, rng),
    "re-lit + noised": lambda bgr, rng: _noise(_relight(bgr, rng), rng),
    "blurred (sigma 1.5)": lambda bgr, rng: cv2.GaussianBlur(bgr, (0, 0), 1.5),
    "pasted into a scene": _paste,
    "printed and photographed": _print,
}
PLAIN_DIGITAL = ("identical", "re-encoded (JPEG q50)", "resized (x0.6)", "upscaled (x1.8)", "cropped",
                 "rotated (+-10 deg)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-dev")
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--bona-fide-limit", type=int, default=0, help="at most this many genuine pairs (0: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = get_settings()
    engine = FaceEngine.from_settings(settings)
    gate = settings.gate
    detector = ReplayDetector(gate.replay_threshold, gate.replay_iterations, gate.replay_epsilon)
    labeled = load_set(args.dataset)
    original = collect(engine, labeled, "original", settings.evaluation.cache_dir)
    pairs = mated_pairs(original.vectors, original.acquired, labeled.subjects, -2.0)
    usable = original.acquired[pairs.first] & original.acquired[pairs.second]
    first, second = pairs.first[usable], pairs.second[usable]
    rng = np.random.default_rng(SEED)
    if args.bona_fide_limit and len(first) > args.bona_fide_limit:
        pick = rng.choice(len(first), args.bona_fide_limit, replace=False)
        first, second = first[pick], second[pick]
    started = time.perf_counter()
    bona_fide = np.array([detector.score(original.aligned_grey[i], original.aligned_grey[j])
                          for i, j in zip(first, second)])
    per_pair_ms = (time.perf_counter() - started) * 1000 / max(len(first), 1)

    photos = rng.choice(np.flatnonzero(original.acquired), args.photos, replace=False)
    attacks: dict[str, list[float]] = {name: [] for name in ATTACKS}
    failures: dict[str, int] = {name: 0 for name in ATTACKS}
    for name, attack in ATTACKS.items():
        images = []
        for i in photos:
            bgr = cv2.imread(str(labeled.path(int(i))), cv2.IMREAD_COLOR)
            images.append(cv2.imencode(".png", attack(bgr, rng))[1].tobytes())
        for i, image in zip(photos, images):
            try:
                faces = engine.analyse_all(image).faces
            except VerifierError:
                failures[name] += 1  # no face: the attack fails at acquisition, not here
                continue
            # LFW photos often hold other people: the replayed face is the one
            # the original's template matches best, as at the gate it is the traveller.
            face = max(faces, key=lambda f: float(f.template.vector @ original.vectors[i]))
            attacks[name].append(detector.score(face.aligned, original.aligned_grey[i]))

    threshold = detector.threshold
    flagged = bona_fide >= threshold
    # The threshold that would flag 0.1 % of bona fide pairs, for reference.
    at_bpcer = float(np.quantile(bona_fide, 0.999))
    rows = {}
    for name, scores in attacks.items():
        values = np.array(scores)
        rows[name] = {
            "presented": len(values), "no_face": failures[name],
            "apcer": float(np.mean(values < threshold)) if len(values) else None,
            "apcer_at_bpcer_0.1%": float(np.mean(values < at_bpcer)) if len(values) else None,
            "min_score": float(values.min()) if len(values) else None,
        }
    all_scores = np.concatenate([np.array(s) for s in attacks.values()])
    report = {
        "provenance": provenance(), "dataset": str(args.dataset), "threshold": threshold,
        "bona_fide_pairs": len(bona_fide), "bpcer": float(flagged.mean()), "bona_fide_flagged": int(flagged.sum()),
        "flagged_pairs": [[labeled.keys[int(i)], labeled.keys[int(j)], float(s)]
                          for i, j, s in zip(first[flagged], second[flagged], bona_fide[flagged])],
        "threshold_at_bpcer_0.1%": at_bpcer, "bona_fide_ms_per_pair": per_pair_ms,
        "bona_fide_score_quantiles": {q: float(np.quantile(bona_fide, q)) for q in (0.5, 0.99, 0.999, 1.0)},
        "apcer_all": float(np.mean(all_scores < threshold)), "attacks": rows,
        "apcer_plain_digital": float(np.mean(np.concatenate([np.array(attacks[n]) for n in PLAIN_DIGITAL])
                                             < threshold)),
    }
    out = run_dir(args.out) / "replay.json"
    write_json(out, report)
    print(f"threshold {threshold:.3f}: BPCER {100 * report['bpcer']:.3f} % ({int(flagged.sum())} of {len(bona_fide)} "
          f"genuine pairs; {per_pair_ms:.1f} ms per pair); threshold at BPCER 0.1 %: {at_bpcer:.3f}")
    print("| replay type | presented | no face | APCER | APCER at BPCER 0.1 % | lowest score |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['presented']} | {row['no_face']} | {100 * (row['apcer'] or 0):.2f} % | "
              f"{100 * (row['apcer_at_bpcer_0.1%'] or 0):.2f} % | {row['min_score']:.3f} |")
    print(f"all types: APCER {100 * report['apcer_all']:.3f} %; plain digital: "
          f"{100 * report['apcer_plain_digital']:.3f} %")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
