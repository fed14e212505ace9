"""Document-photo replay detection on LFW dev: APCER per replay type, BPCER on genuine pairs.

    .venv/bin/python -m benchmarks.replay [--photos 500] [--dataset ../shared/data/lfw-dev]

Bona fide: every mated pair of the set (two different photographs of one
person, the live capture and the chip photo of a genuine traveller), each
image through the real pipeline (aligned crops from `verifier eval --quality`'s
cache of the original condition, computed here when absent). Attacks: for
``--photos`` images drawn at random, the photo itself made into each replay
type below, run through the real pipeline (detector, landmarks, alignment)
and compared with the untouched photo as the reference. An attack is caught
when the copy check scores it at or above its threshold or the display-grid
check (:mod:`verifier.gate.display`, the live crop alone) at or above its own,
as at the gate, where either refers the traveller. ISO/IEC 30107-3 terms:
APCER is the share of attacks neither check catches (let through), BPCER the
share of bona fide pairs that either flags.

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
from verifier.calibration import serving_threshold
from verifier.config import get_settings
from verifier.errors import VerifierError
from verifier.evaluation.datasets import load_set
from verifier.evaluation.erc import collect, mated_pairs
from verifier.face.quality import QualityAssessor
from verifier.gate.display import DisplayPatternDetector
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


def _mirror(bgr: np.ndarray) -> np.ndarray:
    """Left and right swapped: a phone's front camera, or a print seen from the wrong side."""
    return cv2.flip(bgr, 1)


def _turn(bgr: np.ndarray, degrees: float) -> np.ndarray:
    """The whole photo turned by ``degrees`` on a larger grey canvas (a phone or
    print held at a slant: nothing of the photo is cut off, no reflected copy
    of the face appears in the corners)."""
    h, w = bgr.shape[:2]
    side = int(np.ceil(np.hypot(h, w)))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    matrix[:, 2] += ((side - w) / 2, (side - h) / 2)
    return cv2.warpAffine(bgr, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=(96, 96, 96))


def _turned(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _turn(bgr, rng.uniform(-30.0, 30.0))


def _tilt(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A print or screen tilted away from the camera: the plane turned 25-40
    degrees about one axis and up to 15 about the other, seen through a
    pinhole camera whose focal length is the photo's width (a strong
    keystone; one side of the face shrinks)."""
    h, w = bgr.shape[:2]
    strong = np.radians(rng.uniform(25.0, 40.0) * rng.choice([-1.0, 1.0]))
    weak = np.radians(rng.uniform(-15.0, 15.0))
    about_y, about_x = (strong, weak) if rng.random() < 0.5 else (weak, strong)
    ry = np.array([[np.cos(about_y), 0, np.sin(about_y)], [0, 1, 0], [-np.sin(about_y), 0, np.cos(about_y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(about_x), -np.sin(about_x)], [0, np.sin(about_x), np.cos(about_x)]])
    focal = float(w)
    corners = np.array([[-w / 2, -h / 2, 0], [w / 2, -h / 2, 0], [w / 2, h / 2, 0], [-w / 2, h / 2, 0]])
    seen = (rx @ ry @ corners.T).T + (0, 0, focal)
    projected = focal * seen[:, :2] / seen[:, 2:3]
    projected -= projected.min(axis=0) - 0.1 * w
    size = (int(projected[:, 0].max() + 0.1 * w), int(projected[:, 1].max() + 0.1 * w))
    source = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    matrix = cv2.getPerspectiveTransform(source, projected.astype(np.float32))
    return cv2.warpPerspective(bgr, matrix, size, flags=cv2.INTER_LINEAR, borderValue=(96, 96, 96))


def _crop_rescale(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to 15 % cut from each side, then the rest scaled by 0.3-3x (log-uniform):
    a copy sent at whatever size a phone or a screenshot gives."""
    h, w = bgr.shape[:2]
    top, bottom = rng.integers(0, int(0.15 * h) + 1, 2)
    left, right = rng.integers(0, int(0.15 * w) + 1, 2)
    crop = bgr[top:h - bottom, left:w - right]
    scale = float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
    return cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _relight_strong(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma 0.4-2.5, gain 0.6-1.5, offset +-35 and a lamp's linear fall-off of
    up to 20 % across the photo in a random direction."""
    h, w = bgr.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xs / w - 0.5) * np.cos(angle) + (ys / h - 0.5) * np.sin(angle))[..., None]
    gamma = float(np.exp(rng.uniform(np.log(0.4), np.log(2.5))))
    out = 255.0 * (bgr / 255.0) ** gamma * rng.uniform(0.6, 1.5) * (1 + rng.uniform(0, 0.4) * ramp)
    return np.clip(out + rng.uniform(-35, 35), 0, 255).astype(np.uint8)


def _screen(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo on a display, photographed. The panel draws each pixel as red,
    green and blue sub-pixel stripes with a dark gap below (a 3x3 cell, as
    bright on average as the pixel), turned a few degrees; the camera's lens
    blurs it by a sixth to a third of a cell and each camera pixel averages the panel over
    its area at a non-integer 0.35-0.7 of the panel's resolution, too coarse
    to resolve the grid: what is left of the grid folds into moiré. Then the
    panel's raised black level, sensor noise and re-encoding. Light is
    clipped where a sensor clips it, after the lens and the pixel's area
    have averaged it (a sub-pixel is brighter than its pixel's average, but
    nothing saturates before the camera sees it)."""
    h, w = bgr.shape[:2]
    cell = np.zeros((3, 3, 3), np.float32)
    cell[:2, 0, 2], cell[:2, 1, 1], cell[:2, 2, 0] = 3.75, 3.75, 3.75
    cell[2] = 0.4 * cell[0]
    panel = np.repeat(np.repeat(bgr.astype(np.float32), 3, 0), 3, 1) * np.tile(cell, (h, w, 1))
    panel = _turn(panel, rng.uniform(-6.0, 6.0))
    panel = cv2.GaussianBlur(panel, (0, 0), rng.uniform(0.5, 1.0))
    scale = rng.uniform(0.35, 0.7)
    out = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = out * rng.uniform(0.8, 1.0) + rng.uniform(10, 30)
    return _jpeg(_noise(np.clip(out, 0, 255).astype(np.uint8), rng, 3.0), 85)


def _noise_strong(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise of sigma 12-20 (a dim room), then re-encoded at JPEG q70."""
    return _jpeg(_noise(bgr, rng, rng.uniform(12.0, 20.0)), 70)


# Plain digital replays and their mirror images: goal APCER 0 %.
PLAIN_DIGITAL: dict[str, Attack] = {
    "identical": lambda bgr, rng: bgr,
    "re-encoded (JPEG q50)": lambda bgr, rng: _jpeg(bgr, 50),
    "resized (x0.6)": lambda bgr, rng: cv2.resize(bgr, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA),
    "upscaled (x1.8)": lambda bgr, rng: cv2.resize(bgr, None, fx=1.8, fy=1.8, interpolation=cv2.INTER_CUBIC),
    "cropped": lambda bgr, rng: bgr[20:-15, 25:-10],
    "rotated (+-10 deg)": lambda bgr, rng: _rotate(bgr, rng.choice([-10.0, 10.0])),
    "mirrored": lambda bgr, rng: _mirror(bgr),
    "mirrored, re-encoded (JPEG q50), resized (x0.6)": lambda bgr, rng: _jpeg(
        cv2.resize(_mirror(bgr), None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA), 50),
}
# What a phone, a screen or a printer does to a photo: goal APCER <= 0.1 % each.
TRANSFORMED: dict[str, Attack] = {
    "rotated (up to +-30 deg)": _turned,
    "mirrored + rotated (up to +-30 deg)": lambda bgr, rng: _turned(_mirror(bgr), rng),
    "perspective tilt (25-40 deg)": _tilt,
    "cropped + rescaled (x0.3-3)": _crop_rescale,
    "re-lit": _relight,
    "re-lit strong (gamma 0.4-2.5, gain, offset, fall-off)": _relight_strong,
    "noised (sigma 8)": lambda bgr, rng: _noise(bgr, rng),
    "noised strong (sigma 12-20, JPEG q70)": _noise_strong,
    "re-lit + noised": lambda bgr, rng: _noise(_relight(bgr, rng), rng),
    "blurred (sigma 1.5)": lambda bgr, rng: cv2.GaussianBlur(bgr, (0, 0), 1.5),
    "pasted into a scene": _paste,
    "printed and photographed": _print,
    "screen (pixel grid, moire)": _screen,
    "mirrored + printed": lambda bgr, rng: _print(_mirror(bgr), rng),
    "mirrored + screen + re-lit strong": lambda bgr, rng: _relight_strong(_screen(_mirror(bgr), rng), rng),
    "mirrored + tilted + re-lit strong": lambda bgr, rng: _relight_strong(_tilt(_mirror(bgr), rng), rng),
}
ATTACKS: dict[str, Attack] = PLAIN_DIGITAL | TRANSFORMED


def _cpu_flags() -> str:
    """The vector instruction sets this CPU offers (what OpenCV's kernels can use), for the figure per check."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")
    return " ".join(flag for flag in wanted if flag in flags)


def _apcer(scores: np.ndarray, threshold: float) -> float | None:
    return float(np.mean(scores < threshold)) if len(scores) else None


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
    display = DisplayPatternDetector(gate.display_pattern_threshold)
    matcher_threshold = serving_threshold(settings, engine.model_id, engine.operating_point).value
    quality = QualityAssessor.from_settings(settings, engine.embedder.utility_members)
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
    started = time.perf_counter()
    bona_fide_display = np.array([display.score(original.aligned_grey[i]) for i in first])
    display_ms = (time.perf_counter() - started) * 1000 / max(len(first), 1)

    photos = rng.choice(np.flatnonzero(original.acquired), args.photos, replace=False)
    # Per attack type, one row per presented face: replay score, display-grid
    # score, whether the 1:1 comparison with the original matched, whether the
    # gate's quality policy found nothing to retry. The two checks must catch
    # every attack; the gate lets through only those that also match and pass quality.
    attacks: dict[str, list[tuple[float, float, bool, bool]]] = {name: [] for name in ATTACKS}
    failures: dict[str, int] = {name: 0 for name in ATTACKS}
    for name, attack in ATTACKS.items():
        for i in photos:
            bgr = cv2.imread(str(labeled.path(int(i))), cv2.IMREAD_COLOR)
            image = cv2.imencode(".png", attack(bgr, rng))[1].tobytes()
            try:
                faces = engine.analyse_all(image).faces
            except VerifierError:
                failures[name] += 1  # no face: the attack fails at acquisition, not here
                continue
            # LFW photos often hold other people: the replayed face is the one
            # the original's template matches best, as at the gate it is the traveller.
            face = max(faces, key=lambda f: float(f.template.vector @ original.vectors[i]))
            attacks[name].append((detector.score(face.aligned, original.aligned_grey[i]), display.score(face.aligned),
                                  float(face.template.vector @ original.vectors[i]) >= matcher_threshold,
                                  quality.assess(face).acceptable))

    threshold = detector.threshold
    copies = bona_fide >= threshold
    screens = display.is_display(bona_fide_display)
    flagged = copies | screens
    # The copy check's threshold that would flag 0.1 % of bona fide pairs, for reference.
    at_bpcer = float(np.quantile(bona_fide, 0.999))
    rows = {}
    for name, presented in attacks.items():
        values = np.array([score for score, _, _, _ in presented])
        grid = np.array([score for _, score, _, _ in presented])
        missed = (values < threshold) & ~display.is_display(grid)
        at_gate = np.array([m for m, (_, _, match, good) in zip(missed, presented) if match and good], dtype=bool)
        rows[name] = {
            "group": "plain digital or mirrored" if name in PLAIN_DIGITAL else "transformed",
            "presented": len(values), "no_face": failures[name], "missed": int(missed.sum()),
            "apcer": float(missed.mean()) if len(values) else None,
            "missed_by_copy_check": int(np.sum(values < threshold)), "apcer_copy_check": _apcer(values, threshold),
            "apcer_copy_check_at_bpcer_0.1%": _apcer(values, at_bpcer),
            "caught_by_display_grid": int(np.sum(display.is_display(grid))),
            "matched_and_quality_ok": len(at_gate), "accepted_at_gate": int(at_gate.sum()),
            "min_score": float(values.min()) if len(values) else None, "scores": values.round(5).tolist(),
            "display_scores": grid.round(4).tolist(),
        }
    all_missed = sum(row["missed"] for row in rows.values())
    all_presented = sum(row["presented"] for row in rows.values())
    plain_missed = sum(rows[n]["missed"] for n in PLAIN_DIGITAL)
    plain_presented = sum(rows[n]["presented"] for n in PLAIN_DIGITAL)
    report = {
        "provenance": provenance(), "dataset": str(args.dataset), "photos": args.photos, "threshold": threshold,
        "cpu_flags": _cpu_flags(), "matcher_threshold": matcher_threshold,
        "display_pattern_threshold": display.threshold, "ms_per_display_check": display_ms,
        "bona_fide_pairs": len(bona_fide), "bpcer": float(flagged.mean()), "bona_fide_flagged": int(flagged.sum()),
        "bona_fide_flagged_as_copy": int(copies.sum()), "bona_fide_flagged_as_display": int(screens.sum()),
        "bona_fide_display_quantiles": {q: float(np.quantile(bona_fide_display, q)) for q in (0.5, 0.99, 0.999, 1.0)},
        "flagged_pairs": [[labeled.keys[int(i)], labeled.keys[int(j)], float(s)]
                          for i, j, s in zip(first[flagged], second[flagged], bona_fide[flagged])],
        "threshold_at_bpcer_0.1%": at_bpcer, "ms_per_check": per_pair_ms,
        "bona_fide_top_scores": np.sort(bona_fide)[-10:].round(5).tolist(),
        "bona_fide_score_quantiles": {q: float(np.quantile(bona_fide, q)) for q in (0.5, 0.99, 0.999, 1.0)},
        "apcer_all": all_missed / max(all_presented, 1), "apcer_plain_digital": plain_missed / max(plain_presented, 1),
        "attacks": rows,
    }
    out = run_dir(args.out) / "replay.json"
    write_json(out, report)
    print(f"copy check at {threshold:.3f}, display grid at {display.threshold:.2f}: BPCER {100 * report['bpcer']:.3f} % "
          f"({int(flagged.sum())} of {len(bona_fide)} genuine pairs: {int(copies.sum())} as copies, "
          f"{int(screens.sum())} as displays); {per_pair_ms:.1f} + {display_ms:.1f} ms per check "
          f"(CPU flags: {report['cpu_flags']}); copy threshold at BPCER 0.1 %: {at_bpcer:.3f}")
    print("| group | replay type | presented | no face | missed by the copy check | caught by the display grid "
          "| missed | APCER | matched, quality ok | accepted at the gate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {row['group']} | {name} | {row['presented']} | {row['no_face']} | {row['missed_by_copy_check']} | "
              f"{row['caught_by_display_grid']} | {row['missed']} | {100 * (row['apcer'] or 0):.2f} % | "
              f"{row['matched_and_quality_ok']} | {row['accepted_at_gate']} |")
    print(f"all types: APCER {100 * report['apcer_all']:.3f} %; plain digital or mirrored: "
          f"{100 * report['apcer_plain_digital']:.3f} %")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
