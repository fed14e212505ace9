"""Quality that predicts recognition errors: the error-versus-reject characteristic.

ISO/IEC 29794-1 judges a quality measure by what rejecting the lowest-quality
images does to the false non-match rate at a fixed threshold: a useful
measure cuts FNMR fast, a useless one no faster than rejecting at random.
This module measures that for every quality component, the embedder's
utility and the unified score, on a labeled set and on derived conditions
(downscaled, blurred, dark, all three), with subject-bootstrap intervals and
the band random rejection falls in. It also writes the pack's utility
calibration (the norm quantiles :mod:`verifier.face.quality` scores by).

The threshold is the one the server decides by (the pack's calibration row at
``matching.target_fmr``), fixed across conditions. An image the pipeline could
not acquire counts as quality -1 (rejected first) and its mated comparisons as
false non-matches, since at a gate a failure to acquire is not a match; the
report also gives ISO/IEC 29794-1's convention (acquired images only), which
differs where many images fail to acquire.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from verifier.config import Settings
from verifier.errors import VerifierError
from verifier.evaluation.cache import cache_identity
from verifier.evaluation.datasets import LabeledSet
from verifier.face.quality import PERCENTILES, RULE_COMPONENTS, QualityAssessor, UtilityCalibration
from verifier.pipeline import FaceEngine, Selection

# Bump when collection changes what is stored.
ERC_REVISION = 1
REJECT_FRACTIONS = np.round(np.arange(0.0, 0.305, 0.01), 2)
HEADLINE_FRACTION = 0.10
RANDOM_REJECTIONS = 200


def _degrade(scale: float, sigma: float, gain: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(bgr: np.ndarray) -> np.ndarray:
        out = bgr
        if scale != 1.0:
            out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if sigma:
            out = cv2.GaussianBlur(out, (0, 0), sigma)
        if gain != 1.0:
            out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        return out

    return apply


# Derived conditions: a capture farther away, out of focus, under-lit, and all three at once.
CONDITIONS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "original": None,
    "downscaled": _degrade(0.4, 0.0, 1.0),
    "blurred": _degrade(1.0, 2.5, 1.0),
    "dark": _degrade(1.0, 0.0, 0.3),
    "degraded": _degrade(0.5, 1.5, 0.45),
}


@dataclass
class Collected:
    """One condition of a set: per image, its template, raw norms, rule component scores."""

    vectors: np.ndarray
    acquired: np.ndarray
    norms: np.ndarray
    rules: np.ndarray
    rule_names: tuple[str, ...]
    aligned_grey: np.ndarray
    landmarks: np.ndarray


def _encode(bgr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def collect(engine: FaceEngine, labeled: LabeledSet, condition: str, cache_dir: Path) -> Collected:
    """Run the real pipeline over every image of the set under ``condition``
    (cached in ``cache_dir`` by models, settings and condition)."""
    settings = engine.settings
    identity = cache_identity(engine, Selection.CENTRE, None) | {
        "erc_revision": ERC_REVISION, "condition": condition, "quality": settings.quality.model_dump(mode="json"),
        "images": hashlib.sha256("\n".join(labeled.keys).encode()).hexdigest(),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir / f"erc-{condition}-{digest}.npz"
    names = RULE_COMPONENTS
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            return Collected(stored["vectors"], stored["acquired"], stored["norms"], stored["rules"], names,
                             stored["aligned_grey"], stored["landmarks"])
    assessor = QualityAssessor(settings.quality, None, ())
    size, members = engine.embedder.input_size, len(engine.embedder.utility_members)
    n = len(labeled)
    out = Collected(np.zeros((n, engine.embedder.dimension), np.float32), np.zeros(n, bool),
                    np.zeros((n, members), np.float32), np.zeros((n, len(names)), np.float32), names,
                    np.zeros((n, size, size), np.uint8), np.zeros((n, 5, 2), np.float32))
    change = CONDITIONS[condition]
    batch = settings.evaluation.batch_size
    for start in tqdm(range(0, n, batch), desc=f"quality {labeled.name}/{condition}", unit="batch"):
        chunk = range(start, min(start + batch, n))
        images = []
        for i in chunk:
            data = labeled.path(i).read_bytes()
            if change is not None:
                data = _encode(change(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)))
            images.append(data)
        for i, result in zip(chunk, engine.analyse_batch(images, Selection.CENTRE)):
            if isinstance(result, VerifierError):
                continue
            out.acquired[i] = True
            out.vectors[i] = result.template.vector
            out.norms[i] = result.utility
            out.rules[i] = [c.score for c in assessor.components(result)]
            out.aligned_grey[i] = cv2.cvtColor(result.aligned, cv2.COLOR_BGR2GRAY)
            out.landmarks[i] = result.face.landmarks
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), vectors=out.vectors, acquired=out.acquired, norms=out.norms,
             rules=out.rules, aligned_grey=out.aligned_grey, landmarks=out.landmarks)
    path.with_suffix(".tmp.npz").replace(path)
    return out


def utility_calibration(norms: np.ndarray, acquired: np.ndarray, members: tuple[str, ...], pack: str,
                        dataset: str) -> UtilityCalibration:
    """Norm quantiles of each embedder over the acquired images."""
    kept = norms[acquired]
    return UtilityCalibration(
        pack=pack, dataset=dataset, images=int(acquired.sum()), created=datetime.now(UTC).date().isoformat(),
        members={m: [round(float(v), 5) for v in np.percentile(kept[:, k], PERCENTILES)]
                 for k, m in enumerate(members)},
    )


@dataclass(frozen=True)
class MatedPairs:
    first: np.ndarray
    second: np.ndarray
    subject: np.ndarray
    false_non_match: np.ndarray


def mated_pairs(vectors: np.ndarray, acquired: np.ndarray, subjects: np.ndarray, threshold: float) -> MatedPairs:
    first, second = [], []
    for subject in np.unique(subjects):
        members = np.flatnonzero(subjects == subject)
        if len(members) > 1:
            a, b = np.triu_indices(len(members), 1)
            first.append(members[a])
            second.append(members[b])
    i, j = np.concatenate(first), np.concatenate(second)
    scores = np.einsum("ij,ij->i", vectors[i], vectors[j])
    usable = acquired[i] & acquired[j]
    return MatedPairs(i, j, subjects[i], ~usable | (scores < threshold))


def _kept_masks(quality: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(fractions, images) masks of the images kept when the lowest ``f`` of
    the finite-quality images are rejected (an infinite quality is out of the
    ranking); ties are broken at random so a coarse measure gets no free ordering."""
    order = np.lexsort((rng.random(len(quality)), quality))
    ranks = np.empty(len(quality), np.int64)
    ranks[order] = np.arange(len(quality))
    cut = np.floor(fractions * np.isfinite(quality).sum()).astype(np.int64)
    return ranks[None, :] >= cut[:, None]


@dataclass(frozen=True)
class Characteristic:
    """FNMR after rejecting each fraction, its bootstrap interval, and the
    reduction at the headline fraction with its interval."""

    measure: str
    fnmr: list[float]
    low: list[float]
    high: list[float]
    reduction: float
    reduction_low: float
    reduction_high: float


def characteristic(measure: str, quality: np.ndarray, pairs: MatedPairs, fractions: np.ndarray,
                   replicates: int, seed: int) -> Characteristic:
    rng = np.random.default_rng(seed)
    kept = _kept_masks(quality, fractions, rng)
    both = kept[:, pairs.first] & kept[:, pairs.second]
    subject_ids, inverse = np.unique(pairs.subject, return_inverse=True)
    count = np.zeros((len(fractions), len(subject_ids)))
    errors = np.zeros_like(count)
    for f in range(len(fractions)):
        count[f] = np.bincount(inverse, weights=both[f], minlength=len(subject_ids))
        errors[f] = np.bincount(inverse, weights=both[f] & pairs.false_non_match, minlength=len(subject_ids))
    fnmr = errors.sum(1) / np.maximum(count.sum(1), 1)
    draws = rng.multinomial(len(subject_ids), np.full(len(subject_ids), 1 / len(subject_ids)), size=replicates)
    boot = (draws @ errors.T) / np.maximum(draws @ count.T, 1)
    head = int(np.argmin(np.abs(fractions - HEADLINE_FRACTION)))
    reduction = 1 - fnmr[head] / fnmr[0] if fnmr[0] else 0.0
    boot_reduction = 1 - boot[:, head] / np.maximum(boot[:, 0], 1e-12)
    return Characteristic(
        measure, fnmr.tolist(), np.percentile(boot, 2.5, axis=0).tolist(), np.percentile(boot, 97.5, axis=0).tolist(),
        float(reduction), float(np.percentile(boot_reduction, 2.5)), float(np.percentile(boot_reduction, 97.5)),
    )


def random_band(pairs: MatedPairs, images: int, fractions: np.ndarray, seed: int) -> tuple[list[float], list[float]]:
    """The 2.5-97.5 % band of FNMR when the rejected images are chosen at random."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(RANDOM_REJECTIONS):
        kept = _kept_masks(rng.random(images), fractions, rng)
        both = kept[:, pairs.first] & kept[:, pairs.second]
        runs.append((both & pairs.false_non_match).sum(1) / np.maximum(both.sum(1), 1))
    stacked = np.array(runs)
    return np.percentile(stacked, 2.5, axis=0).tolist(), np.percentile(stacked, 97.5, axis=0).tolist()


@dataclass(frozen=True)
class ConditionResult:
    condition: str
    images: int
    acquired: int
    mated_pairs: int
    fnmr: float
    random_low: list[float]
    random_high: list[float]
    measures: list[Characteristic]
    # ISO/IEC 29794-1's convention: only comparisons of two acquired images,
    # rejection among the acquired images (unified and utility only).
    acquired_only: list[Characteristic]


def measures_of(collected: Collected, calibration: UtilityCalibration, members: tuple[str, ...],
                settings: Settings) -> dict[str, np.ndarray]:
    """Each quality measure per image (-1 for an image not acquired); the
    unified score mixed as :meth:`QualityAssessor.unified` mixes it."""
    utility = np.array([calibration.score(members, tuple(n)) for n in collected.norms])
    rules = collected.rules.mean(1)
    weight = settings.quality.utility_weight
    unified = weight * utility + (1 - weight) * rules
    out = {"unified": unified, "utility (embedding norm)": utility, "rules (mean of components)": rules}
    for k, name in enumerate(collected.rule_names):
        out[name] = collected.rules[:, k]
    return {name: np.where(collected.acquired, values, -1.0) for name, values in out.items()}


def run_condition(condition: str, collected: Collected, labeled: LabeledSet, calibration: UtilityCalibration,
                  members: tuple[str, ...], threshold: float, settings: Settings) -> ConditionResult:
    pairs = mated_pairs(collected.vectors, collected.acquired, labeled.subjects, threshold)
    seed = settings.evaluation.bootstrap_seed
    replicates = max(settings.evaluation.bootstrap_replicates // 5, 50)
    low, high = random_band(pairs, len(labeled), REJECT_FRACTIONS, seed)
    measures = measures_of(collected, calibration, members, settings)
    results = [characteristic(name, values, pairs, REJECT_FRACTIONS, replicates, seed)
               for name, values in measures.items()]
    both = collected.acquired[pairs.first] & collected.acquired[pairs.second]
    acquired_pairs = MatedPairs(pairs.first[both], pairs.second[both], pairs.subject[both],
                                pairs.false_non_match[both])
    acquired_only = [characteristic(name, np.where(collected.acquired, measures[name], np.inf), acquired_pairs,
                                    REJECT_FRACTIONS, replicates, seed) for name in list(measures)[:2]]
    return ConditionResult(condition, len(labeled), int(collected.acquired.sum()), len(pairs.first),
                           float(pairs.false_non_match.mean()), low, high, results, acquired_only)


def write_erc_report(results: list[ConditionResult], out_dir: Path, header: dict[str, object]) -> Path:
    """Markdown table, JSON with every figure, and one ERC plot per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "erc.json").write_text(json.dumps(
        {"header": header, "fractions": REJECT_FRACTIONS.tolist(), "conditions": [asdict(r) for r in results]},
        indent=1))
    head = int(np.argmin(np.abs(REJECT_FRACTIONS - HEADLINE_FRACTION)))
    lines = [f"# Error-versus-reject characteristic: {header['dataset']}, pack {header['pack']}", "",
             f"Threshold {header['threshold']:.4f} (FMR {header['target_fmr']:g}, fixed across conditions). "
             f"FNMR reduction after rejecting the lowest {HEADLINE_FRACTION:.0%} of images, "
             "95 % subject-bootstrap interval; random rejection's band is its 2.5-97.5 % FNMR range.", ""]
    lines.append("| measure | " + " | ".join(r.condition for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    lines.append("| FNMR, nothing rejected | " + " | ".join(f"{100 * r.fnmr:.2f} % ({r.acquired}/{r.images} "
                                                           "acquired)" for r in results) + " |")
    lines.append("| FNMR band, random 10 % rejected | " + " | ".join(
        f"{100 * r.random_low[head]:.2f}-{100 * r.random_high[head]:.2f} %" for r in results) + " |")
    for k, measure in enumerate(results[0].measures):
        cells = [f"{100 * r.measures[k].reduction:.0f} % [{100 * r.measures[k].reduction_low:.0f}, "
                 f"{100 * r.measures[k].reduction_high:.0f}]" for r in results]
        lines.append(f"| {measure.measure} | " + " | ".join(cells) + " |")
    for k, measure in enumerate(results[0].acquired_only):
        cells = [f"{100 * r.acquired_only[k].reduction:.0f} % [{100 * r.acquired_only[k].reduction_low:.0f}, "
                 f"{100 * r.acquired_only[k].reduction_high:.0f}]" for r in results]
        lines.append(f"| {measure.measure}, acquired images only | " + " | ".join(cells) + " |")
    for result in results:
        fig, ax = plt.subplots(figsize=(6, 4))
        x = 100 * REJECT_FRACTIONS
        ax.fill_between(x, 100 * np.array(result.random_low), 100 * np.array(result.random_high), color="0.85",
                        label="random rejection (95 %)")
        for measure in result.measures[:3]:
            ax.plot(x, 100 * np.array(measure.fnmr), label=measure.measure)
            ax.fill_between(x, 100 * np.array(measure.low), 100 * np.array(measure.high), alpha=0.15)
        ax.set(xlabel="images rejected (%)", ylabel="FNMR (%)", title=f"ERC, {result.condition}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"erc-{result.condition}.png", dpi=110)
        plt.close(fig)
        lines.append(f"\n![ERC {result.condition}](erc-{result.condition}.png)")
    path = out_dir / "erc.md"
    path.write_text("\n".join(lines) + "\n")
    return path
