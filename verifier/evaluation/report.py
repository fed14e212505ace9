"""The evaluation written down: a DET curve, a score-distribution plot, a Markdown
report for people and a JSON file with every figure for machines."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from verifier.evaluation.evaluate import Evaluated, EvaluationResult, ServedPoint, Verification
from verifier.evaluation.metrics import Interval

HISTOGRAM_BINS = 200

INTERVALS_TEXT = (
    "*Wilson* treats the mated comparisons as "
    "independent trials at the set's threshold; they are not (each image is in several comparisons), "
    "so it is too narrow. *Bootstrap* resamples subjects with replacement, weights every comparison by "
    "how often its subjects were drawn, finds the threshold again in each replicate and takes the "
    "percentile interval: it carries the correlation between comparisons of the same people and the "
    "uncertainty of the threshold itself, and is the one to quote. The FMR interval is the bootstrap "
    "spread of the false-match rate at the threshold found on the whole set."
)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    det: Path
    scores: Path


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, infinities and NaN to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.2f} %"


def _interval(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    return f"[{100 * interval.low:.2f}, {100 * interval.high:.2f}] %"


def _plot_det(evaluated: Evaluated, path: Path) -> None:
    result = evaluated.result
    fig = Figure(figsize=(6.4, 5.2), dpi=120)
    ax = fig.subplots()
    det = evaluated.det
    visible = (det[:, 0] > 0) & (det[:, 1] > 0)
    ax.loglog(det[visible, 0], det[visible, 1], lw=1.6, label=result.model_id)
    for point in result.verification.points:
        if point.fmr > 0 and point.fnmr > 0:
            ax.plot(point.fmr, point.fnmr, "o", ms=5, color="C3")
            ax.annotate(f"FMR {point.target_fmr:g}\nFNMR {100 * point.fnmr:.2f} %", (point.fmr, point.fnmr),
                        textcoords="offset points", xytext=(6, 4), fontsize=7)
    eer = result.verification.eer
    ax.plot([1e-7, 1], [1e-7, 1], ":", color="grey", lw=0.8)
    ax.plot(eer, eer, "s", color="grey", ms=4, label=f"EER {100 * eer:.2f} %")
    ax.set_xlim(1 / max(result.verification.non_mated_comparisons, 1), 1)
    ax.set_ylim(max(1e-4, 0.5 / max(result.verification.mated_comparisons, 1)), 1)
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_title(f"DET: {result.dataset.name}, pack {result.pack} ({result.alignment} landmarks)", fontsize=9)
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)


def _plot_scores(evaluated: Evaluated, path: Path) -> None:
    result, comparisons = evaluated.result, evaluated.comparisons
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.subplots()
    bins = np.linspace(-1, 1, HISTOGRAM_BINS + 1)
    for scores, label, colour in (
        (comparisons.non_mated, f"non-mated ({len(comparisons.non_mated):,})", "C0"),
        (comparisons.mated, f"mated ({len(comparisons.mated):,})", "C1"),
    ):
        counts, _ = np.histogram(scores, bins=bins)
        ax.stairs(counts / max(counts.sum(), 1), bins, fill=True, alpha=0.45, color=colour, label=label)
    for point in result.verification.points:
        ax.axvline(point.threshold, color="C3", lw=0.7, ls="--")
        ax.text(point.threshold, 0.9, f" {point.target_fmr:g}", rotation=90, fontsize=6, transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_xlabel("cosine score")
    ax.set_ylabel("share of comparisons per bin")
    ax.set_title(f"Scores: {result.dataset.name}, pack {result.pack}; dashed: threshold per target FMR", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _verification_lines(v: Verification, confidence: float, files: ReportFiles) -> list[str]:
    lines = [
        "## 1:1 verification, every comparison among the acquired images",
        "",
        f"{v.mated_comparisons:,} mated and {v.non_mated_comparisons:,} non-mated comparisons "
        f"({v.mated_attempted:,} and {v.non_mated_attempted:,} had every image been acquired). "
        f"EER {_pct(v.eer)} at score {v.eer_threshold:.4f}.",
        "",
        "| target FMR | threshold | threshold interval | false matches | FMR | FMR interval | FNMR | FNMR Wilson | "
        "FNMR bootstrap | FRR (FTA folded) | FAR |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in v.points:
        spread = p.threshold_bootstrap
        lines.append(
            f"| {p.target_fmr:g} | {p.threshold:.4f} | "
            + (f"[{spread.low:.4f}, {spread.high:.4f}]" if spread else "n/a")
            + f" | {p.false_matches:,} | {p.fmr:.2e} | "
            + (f"[{p.fmr_bootstrap.low:.1e}, {p.fmr_bootstrap.high:.1e}]" if p.fmr_bootstrap else "n/a")
            + f" | {_pct(p.fnmr)} ({p.false_non_matches}) | {_interval(p.fnmr_wilson)} | "
            f"{_interval(p.fnmr_bootstrap)} | {_pct(p.frr)} | {p.far:.2e} |"
        )
    lines += [
        "",
        "FRR = FTA + (1 − FTA) × FNMR and FAR = (1 − FTA) × FMR (ISO/IEC 19795-1), with FTA the share of "
        "comparisons lost to an unacquired image.",
        "",
        f"Intervals at {confidence:.0%} confidence. " + INTERVALS_TEXT,
        "",
        f"![DET curve]({files.det.name})  ![score distributions]({files.scores.name})",
    ]
    return lines


def _served_lines(served: ServedPoint, mixed: ServedPoint | None) -> list[str]:
    lines = [
        "",
        "## At the served threshold",
        "",
        f"Threshold {served.threshold:.4f} for FMR {served.target_fmr:g} ({served.source}).",
        "",
        "| comparisons | FMR measured | false matches | ratio to target | FNMR | FRR (FTA folded) |",
        "|---|---|---|---|---|---|",
    ]
    for label, point in (("both images in the condition", served), ("one image, against the clean set", mixed)):
        if point is not None:
            lines.append(
                f"| {label} | {point.fmr:.2e} | {point.false_matches:,} | {point.fmr_ratio:.2f} | {_pct(point.fnmr)} "
                f"({point.false_non_matches}) | {_pct(point.frr)} |"
            )
    return lines


def _markdown(result: EvaluationResult, timings: dict[str, float], files: ReportFiles) -> str:
    d, a, v = result.dataset, result.acquisition, result.verification
    lines = [
        f"# Accuracy: {d.name}" + (f", condition {result.condition}" if result.condition else "")
        + f", pack `{result.pack}`",
        "",
        f"- Data set: `{d.root}` ({d.layout} layout): {d.images:,} images of {d.subjects:,} subjects"
        + (f", {d.listed_pairs:,} listed pairs" if d.listed_pairs else ""),
        f"- Model: `{result.model_id}`",
        f"- Alignment: {result.alignment} landmarks; face chosen: {result.selection}",
        f"- Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
        "",
        "## Failure to acquire",
        "",
        f"FTA {a.failures} of {a.attempts} images = {_pct(a.rate)}, Wilson {_interval(a.interval)}"
        + (f"; reasons: {', '.join(f'{k} {n}' for k, n in a.reasons.items())}" if a.reasons else ""),
        "",
    ]
    lines += _verification_lines(v, result.confidence, files) if v is not None else ["No 1:1 figures: see the notes."]
    if result.served is not None:
        lines += _served_lines(result.served, result.served_mixed)
    if result.protocol is not None:
        pr = result.protocol
        lines += [
            "",
            f"## Listed pairs: {len(pr.accuracies)}-fold accuracy (LFW protocol)",
            "",
            "Threshold chosen on the other folds, accuracy on the held-out one; a pair with an unacquired "
            "image is decided \"no match\".",
            "",
            f"Mean accuracy {_pct(pr.mean)} ± {_pct(pr.std)} (standard deviation over folds).",
            "",
            "| fold | threshold | accuracy |",
            "|---|---|---|",
        ]
        lines += [f"| {i + 1} | {t:.4f} | {_pct(acc)} |" for i, (t, acc) in enumerate(zip(pr.thresholds, pr.accuracies))]
    if result.identification is not None:
        ident = result.identification
        lines += [
            "",
            "## 1:N open-set identification",
            "",
            f"Gallery: the first acquired image of each of {ident.gallery:,} subjects with several images; "
            f"{ident.mated_searches:,} mated searches (their other images; {ident.mated_fta} failed to acquire "
            f"and count as misses), {ident.non_mated_searches:,} non-mated searches (subjects with one image, "
            f"never enrolled; {ident.non_mated_fta} failed to acquire); {ident.not_enrolled} images of subjects "
            "with no acquired image left out.",
            "",
            f"Rank-1 hit rate {_pct(ident.rank1)}, Wilson {_interval(ident.rank1_wilson)}.",
            "",
            "| target FPIR | threshold | false positives | FPIR | FNIR (rank 1) | FNIR Wilson |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {p.target_fpir:g} | {p.threshold:.4f} | {p.false_positives} | {p.fpir:.2e} | {_pct(p.fnir)} "
            f"({p.misses}) | {_interval(p.fnir_wilson)} |"
            for p in ident.points
        ]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def write_report(evaluated: Evaluated, out_dir: Path, timings: dict[str, float]) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / "report.md", out_dir / "report.json", out_dir / "det.png", out_dir / "scores.png")
    if evaluated.comparisons is not None:
        _plot_det(evaluated, files.det)
        _plot_scores(evaluated, files.scores)
    files.markdown.write_text(_markdown(evaluated.result, timings, files))
    document = dataclasses.asdict(evaluated.result) | {
        "timings_s": timings,
        "det": {"fmr": evaluated.det[:, 0], "fnmr": evaluated.det[:, 1]},
        "intervals": INTERVALS_TEXT,
    }
    files.json.write_text(json.dumps(_plain(document), indent=1) + "\n")
    return files
