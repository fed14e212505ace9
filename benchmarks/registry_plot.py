"""Latency against registry size, from the JSON lines `benchmarks.registry --out` appends.

    python -m benchmarks.registry_plot RESULTS.jsonl [...] -o docs/registry-latency.png

One line per backend and nprobe (FAISS IVF) or per Milvus index and search
parameter: p50 (solid) and p99 (dashed) of one duplicate search against the
number of templates, with the agreement with exact search written beside each
point.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image


def series_name(row: dict) -> str:
    """What one line of the plot is: the backend and its search setting."""
    if row["backend"] == "milvus":
        params = ", ".join(f"{k}={v}" for k, v in {**row.get("index_params", {}), **row["search_params"]}.items())
        segments = row.get("server_settings", {}).get("dataCoord.segment.maxSize")
        return f"Milvus server {row['index']}" + (f" ({params})" if params else "") + \
            (f", {segments} MB segments" if segments else "")
    return row["backend"] if row["nprobe"] is None else f"{row['backend']}, nprobe {row['nprobe']}"


def read(paths: list[Path]) -> list[dict]:
    """Every result line of the files; a later line for the same series and size wins."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[(series_name(row), row["size"])] = row
    return sorted(rows.values(), key=lambda r: (r["backend"], r["nprobe"] or 0, series_name(r), r["size"]))


def plot(rows: list[dict], out: Path) -> None:
    figure = Figure(figsize=(11, 5.2), layout="constrained")
    axes = figure.add_subplot()
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(series_name(row), []).append(row)
    for label, points in series.items():
        sizes = [p["size"] for p in points]
        (line,) = axes.plot(sizes, [p["p50_ms"] for p in points], marker="o", label=f"{label}: p50")
        axes.plot(sizes, [p["p99_ms"] for p in points], marker="x", linestyle="--", color=line.get_color(),
                  label=f"{label}: p99")
        for p in points:
            axes.annotate(f"{100 * p['agreement']:.2f} %", (p["size"], p["p99_ms"]), textcoords="offset points",
                          xytext=(4, 4), fontsize=7, color=line.get_color())
    axes.axhline(50, color="grey", linewidth=0.8, linestyle=":", label="goal: p99 50 ms (FAISS, 10M)")
    axes.axhline(20, color="black", linewidth=0.8, linestyle=":", label="goal: p99 20 ms (Milvus, 1M)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("templates in the registry")
    axes.set_ylabel("one duplicate search, ms (2 threads)")
    axes.set_title("Registry duplicate search: latency and agreement with exact search")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out.parent.mkdir(parents=True, exist_ok=True)
    # A few flat colours: 64 palette entries keep the committed figure small.
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=64).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--leave-out", nargs="*", default=[],
                        help="leave out the series whose name (as in the legend) contains any of these")
    args = parser.parse_args()
    rows = [row for row in read(args.results) if not any(part in series_name(row) for part in args.leave_out)]
    plot(rows, args.output)
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
