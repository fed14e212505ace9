"""What every benchmark writes: a results folder, latency percentiles, and where the numbers came from."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import openvino

from verifier.config import REPO_ROOT
from verifier.modelzoo.runtime import cpu_features

RESULTS_ROOT = REPO_ROOT / "benchmarks" / "results"
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


def run_dir(out: Path | None) -> Path:
    """``out``, or a new ``benchmarks/results/<timestamp>/`` (git-ignored), created."""
    path = out or RESULTS_ROOT / time.strftime("%Y%m%d-%H%M%S")
    path.mkdir(parents=True, exist_ok=True)
    return path


def latency_summary(milliseconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, percentiles, mean and max; percentiles of few samples are reported
    as measured (p99.9 of 200 calls is nearly the max) with the count beside them."""
    if not milliseconds:
        return {"count": 0, **{name: None for name in PERCENTILES}, "mean": None, "max": None}
    values = np.asarray(milliseconds, dtype=np.float64)
    summary: dict[str, float | int | None] = {"count": int(values.size)}
    summary.update({name: float(np.percentile(values, q)) for name, q in PERCENTILES.items()})
    summary["mean"] = float(values.mean())
    summary["max"] = float(values.max())
    return summary


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def provenance() -> dict[str, Any]:
    """The commit, machine and configuration a result was measured on."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        # What decides which operating points run fast (verifier.modelzoo.runtime).
        "cpu_features": list(cpu_features()),
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.get_version(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
        "verifier_env": {k: v for k, v in os.environ.items() if k.startswith("VERIFIER_")},
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def append_line(row: dict[str, Any], out: Path | None) -> None:
    """Log one result as a JSON line and append it to ``out``: several runs, one
    file, each result a line (what the plots read)."""
    line = json.dumps(row)
    logging.getLogger("benchmarks").info("%s", line)
    if out is not None:
        with out.open("a") as handle:
            handle.write(line + "\n")
