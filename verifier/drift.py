"""Live drift of the false-match rates: non-mated scores seen in traffic, counted.

A threshold promises an FMR (or FPIR) measured on someone else's captures;
the site's own traffic holds non-mated comparisons that say whether it still
does. Two streams are counted:

- ``verification`` (1:1): at Screen, every further face in the frame against
  the traveller's reference, recorded only when the traveller's own face
  matched it, so the further face is someone else (a companion, a passer-by).
  Mated comparisons are excluded by that rule; what it lets in is the same
  traveller's face twice in one frame (a reflection, a photo held up), which
  counts as a false match: the estimate is biased upward, never downward.
- ``identification`` (1:N): every watch-list search (Identify, and each face a
  Screen searches), a false positive where it returned any candidate at the
  served threshold. Searches for people truly on a list cannot be told apart
  and count as false positives: the estimate is biased upward by the share of
  travellers who are on a list (at a border, tiny).

What is kept is privacy-safe by construction: counts only, in a fixed number
of score bins (no template, no identity, no time of any comparison), so its
size is bounded whatever the traffic. The monitor warns (log once, metric,
`verifier calibration status`) when the one-sided lower bound on the live rate
exceeds ``matching.drift_factor`` times the target: the rate is then above
that with the stated confidence, not only in the point estimate. Comparisons
share faces, so the bound is narrower than the truth; the README states how
many comparisons a given inflation needs before it is seen.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import Gauge

from verifier.bounds import lower_bound, upper_bound

log = logging.getLogger(__name__)

# Score bins of 0.005 over [-1, 1]: enough to read a rate at any threshold to that step.
BINS = 400
VERIFICATION = "verification"
IDENTIFICATION = "identification"
STREAMS = (VERIFICATION, IDENTIFICATION)
DRIFT_SCHEMA = 1
CHECK_EVERY = 100

COMPARISONS = Gauge("verifier_drift_non_mated_total",
                    "Non-mated comparisons (1:1) or searches (1:N) counted for drift, by stream", ["stream"])
ESTIMATE = Gauge("verifier_drift_rate", "Live FMR (1:1) or FPIR (1:N) at the served thresholds, and its one-sided "
                 "bounds", ["stream", "bound"])
ALARM = Gauge("verifier_drift_alarm", "1 where the live rate's lower bound exceeds drift_factor x its target",
              ["stream"])


@dataclass(frozen=True)
class StreamStatus:
    stream: str
    target: float
    observed: int
    errors: int
    rate: float
    low: float
    high: float
    factor: float

    @property
    def alarm(self) -> bool:
        return self.observed > 0 and self.low > self.factor * self.target

    def describe(self) -> str:
        what = "FMR" if self.stream == VERIFICATION else "FPIR"
        unit = "non-mated comparisons" if self.stream == VERIFICATION else "searches"
        state = (f"ALARM: above {self.factor:g}x the target with confidence" if self.alarm
                 else "within the alarm line")
        return (f"{self.stream}: {self.errors} of {self.observed:,} {unit} at the served threshold, live {what} "
                f"{self.rate:.2e} [{self.low:.2e}, {self.high:.2e}], target {self.target:g}: {state}")


class _Stream:
    def __init__(self) -> None:
        self.histogram = np.zeros(BINS, dtype=np.int64)
        self.observed = 0
        self.errors = 0
        self.target = 0.0


class DriftMonitor:
    """Counts of non-mated outcomes at the served thresholds; thread-safe, bounded."""

    def __init__(self, factor: float = 2.0, confidence: float = 0.95, path: Path | None = None,
                 save_every: int = 500) -> None:
        self._lock = threading.Lock()
        self._saving = threading.Lock()
        self._streams = {name: _Stream() for name in STREAMS}
        self._alarmed: set[str] = set()
        self.factor, self.confidence, self.path, self.save_every = factor, confidence, path, save_every
        self._unsaved = 0

    def configure(self, factor: float, confidence: float, path: Path | None) -> None:
        """Settings of a server (taking up the counts it saved before, when ``path`` holds them)."""
        with self._lock:
            self.factor, self.confidence = factor, confidence
            if path is not None and path != self.path and path.exists():
                self._load(path)
            self.path = path

    def observe(self, stream: str, score: float | None, threshold: float, target: float) -> None:
        """One non-mated outcome against the threshold served for it: its ``score``, or None
        where only that it did not reach the threshold is known (a search with no candidate)."""
        with self._lock:
            counted = self._streams[stream]
            counted.observed += 1
            counted.target = target
            if score is not None:
                counted.errors += score >= threshold
                counted.histogram[int(np.clip((score + 1.0) / 2.0 * BINS, 0, BINS - 1))] += 1
            self._unsaved += 1
            # The bounds cost a little: they are brought up to date every CHECK_EVERY outcomes.
            status = self._status(stream) if counted.observed % CHECK_EVERY == 0 else None
            save = self.path is not None and self._unsaved >= self.save_every
            if save:
                self._unsaved = 0  # one caller saves; the others go on
        if status is not None:
            self._export(status)
        if save:
            self.save()

    def status(self) -> list[StreamStatus]:
        with self._lock:
            return [self._status(name) for name in STREAMS]

    def histogram(self, stream: str) -> np.ndarray:
        with self._lock:
            return self._streams[stream].histogram.copy()

    def _status(self, stream: str) -> StreamStatus:
        counted = self._streams[stream]
        n, k = counted.observed, counted.errors
        return StreamStatus(stream, counted.target, n, k, k / n if n else 0.0, lower_bound(k, n, self.confidence),
                            upper_bound(k, n, self.confidence), self.factor)

    def _export(self, status: StreamStatus) -> None:
        COMPARISONS.labels(status.stream).set(status.observed)
        for bound, value in (("estimate", status.rate), ("low", status.low), ("high", status.high)):
            ESTIMATE.labels(status.stream, bound).set(value)
        ALARM.labels(status.stream).set(int(status.alarm))
        if status.alarm and status.stream not in self._alarmed:
            self._alarmed.add(status.stream)
            log.warning("drift: %s (matching.drift_factor %g): recalibrate with `verifier calibration site`",
                        status.describe(), status.factor)

    def snapshot(self) -> dict[str, object]:
        """What is kept: counts per stream and score bin, nothing else."""
        with self._lock:
            return {"schema": DRIFT_SCHEMA, "confidence": self.confidence, "factor": self.factor, "streams": {
                name: {"observed": s.observed, "errors": s.errors, "target": s.target,
                       "histogram": s.histogram.tolist()} for name, s in self._streams.items()}}

    def save(self) -> None:
        """Write the counts (atomically). A failure is logged, never raised: counting
        must not fail the request that happened to reach the save."""
        path = self.path
        if path is None:
            return
        document = self.snapshot()
        with self._saving:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                staged = path.with_suffix(".tmp")
                staged.write_text(json.dumps(document) + "\n")
                os.replace(staged, path)
            except OSError as error:
                log.warning("drift counts not saved to %s: %s", path, error)

    def _load(self, path: Path) -> None:
        try:
            document = json.loads(path.read_text())
            for name, saved in document["streams"].items():
                if name in self._streams and len(saved["histogram"]) == BINS:
                    stream = self._streams[name]
                    stream.histogram = np.array(saved["histogram"], dtype=np.int64)
                    stream.observed, stream.errors = int(saved["observed"]), int(saved["errors"])
                    stream.target = float(saved["target"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("drift counts %s not taken up (%s): counting from zero", path, error)

    @classmethod
    def read(cls, path: Path, factor: float, confidence: float) -> "DriftMonitor":
        """The counts a server saved, for `verifier calibration status`."""
        monitor = cls(factor, confidence)
        monitor._load(path)
        return monitor


def at_threshold(histogram: list[int] | np.ndarray, threshold: float) -> int:
    """Scores in the bins at or above the one holding ``threshold`` (an over-count by at most one bin)."""
    start = int(np.clip((threshold + 1.0) / 2.0 * BINS, 0, BINS - 1))
    return int(np.sum(np.asarray(histogram)[start:]))


# The process's monitor, as the Prometheus metrics are the process's: services record into it.
MONITOR = DriftMonitor()
