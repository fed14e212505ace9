"""What a run reports: the targets of the performance issue checked against
the levels they name, the plots of latency and throughput, and the table
printed last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.ticker import NullLocator  # noqa: E402

# Cores other processes may use during a level before the table calls the run noisy.
NOISY_OTHERS_CORES = 0.2


@dataclass(frozen=True)
class Target:
    """One figure the performance issue asks for: checks on one closed-loop level."""

    name: str
    operation: str
    concurrency: int
    checks: tuple[tuple[str, str, float], ...]  # (metric, "<=" or ">=", bound)


TARGETS = (
    Target("Verify two images, concurrency 1", "verify-images", 1, (("p50", "<=", 30.0), ("p99", "<=", 60.0))),
    Target("Verify against a template, concurrency 1", "verify-template", 1, (("p50", "<=", 18.0),)),
    Target(
        "Verify two images, concurrency 4", "verify-images", 4, (("throughput_rps", ">=", 55.0), ("p99", "<=", 150.0))
    ),
)

def describe(result: dict[str, Any]) -> str:
    load = f"c={result['concurrency']}" if result["mode"] == "closed" else f"{result['offered_rate']:g}/s"
    latency = result["latency_ms"]
    p50 = f"{latency['p50']:.1f}" if latency["p50"] is not None else "-"
    return (
        f"{result['operation']} {result['mode']} {load}: {result['ok']} ok, {result['error_count']} errors, "
        f"{result['throughput_rps']:.1f}/s, p50 {p50} ms"
    )


def evaluate_targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of the issue against the closed-loop level it names (absent when not run)."""
    verdicts = []
    for target in TARGETS:
        run = next(
            (r for r in runs if r["mode"] == "closed" and r["operation"] == target.operation
             and r["concurrency"] == target.concurrency),
            None,
        )
        if run is None:
            continue
        checks = []
        for metric, relation, bound in target.checks:
            value = run["throughput_rps"] if metric == "throughput_rps" else run["latency_ms"][metric]
            met = value is not None and (value <= bound if relation == "<=" else value >= bound)
            checks.append({"metric": metric, "relation": relation, "bound": bound, "value": value, "met": met})
        verdicts.append({"target": target.name, "met": all(c["met"] for c in checks), "checks": checks})
    return verdicts


def plot(runs: list[dict[str, Any]], mode: str, path: Path) -> None:
    chosen = [r for r in runs if r["mode"] == mode]
    operations = list(dict.fromkeys(r["operation"] for r in chosen))
    if not operations:
        return
    x_key, x_label = ("concurrency", "concurrent clients") if mode == "closed" else ("offered_rate", "offered rate (1/s)")
    figure, axes = plt.subplots(1, len(operations), figsize=(4.5 * len(operations), 4.4), squeeze=False)
    for ax, name in zip(axes[0], operations):
        rows = sorted((r for r in chosen if r["operation"] == name), key=lambda r: r[x_key])
        xs = [r[x_key] for r in rows]
        for percentile in ("p50", "p90", "p99", "p99.9"):
            ax.plot(xs, [r["latency_ms"][percentile] for r in rows], marker="o", label=percentile)
        if mode == "closed":
            ax.set_xscale("log", base=2)
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_ylim(bottom=0)
        ax.set_xlabel(x_label)
        ax.set_ylabel("latency (ms)")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        throughput = ax.twinx()
        rates = [r["throughput_rps"] for r in rows]
        throughput.plot(xs, rates, color="grey", linestyle="--", marker="s", label="rps")
        throughput.set_ylabel("completed per second")
        throughput.set_ylim(0, 1.15 * max(rates) or 1.0)
    lines, labels = axes[0][0].get_legend_handles_labels()
    extra, extra_labels = throughput.get_legend_handles_labels()
    figure.legend(lines + extra, labels + extra_labels, loc="lower center", ncol=len(labels) + 1)
    figure.suptitle(f"verifier over gRPC, {mode} loop")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def table(runs: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> str:
    """The short printout: one line per level, then the targets."""
    header = (
        f"{'operation':17s} {'mode':6s} {'load':>6s} {'ok':>6s} {'err':>4s} {'rps':>7s} "
        f"{'p50':>7s} {'p90':>7s} {'p99':>7s} {'p99.9':>7s} {'srv cpu':>7s} {'srv MB':>7s}"
    )
    lines = [header, "-" * len(header)]
    for r in runs:
        load = f"{r['concurrency']}" if r["mode"] == "closed" else f"{r['offered_rate']:g}/s"
        lat = r["latency_ms"]
        cells = " ".join(f"{lat[p]:7.1f}" if lat[p] is not None else f"{'-':>7s}" for p in ("p50", "p90", "p99", "p99.9"))
        server = r["usage"].get("server")
        res = f"{server['cpu_cores']:7.2f} {server['rss_mb_peak']:7.0f}" if server else f"{'-':>7s} {'-':>7s}"
        lines.append(
            f"{r['operation']:17s} {r['mode']:6s} {load:>6s} {r['ok']:6d} {r['error_count'] + r['unexpected']:4d} "
            f"{r['throughput_rps']:7.1f} {cells} {res}"
        )
    lines.append("latency in ms; srv cpu = server cores busy; err counts failed calls and wrong decisions")
    others = max((r["usage"]["others"]["cpu_cores"] for r in runs), default=0.0)
    if others > NOISY_OTHERS_CORES:
        lines.append(f"NOISY: other processes kept up to {others:.2f} cores busy during a level; measure on a quiet machine")
    for verdict in verdicts:
        facts = ", ".join(f"{c['metric']} {c['value']:.1f} {c['relation']} {c['bound']:g}" for c in verdict["checks"])
        lines.append(f"[{'met' if verdict['met'] else 'MISSED'}] {verdict['target']}: {facts}")
    return "\n".join(lines)
