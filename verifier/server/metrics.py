"""Prometheus metrics of the transport: what was asked, how long it took, what failed."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("verifier_requests_total", "RPCs answered, by method and status code", ["method", "code"])
LATENCY = Histogram(
    "verifier_request_seconds",
    "Server-side RPC latency",
    ["method"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
)
STAGE = Histogram(
    "verifier_stage_seconds",
    "Time in each pipeline stage",
    ["stage"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)
FAILURE_TO_ACQUIRE = Counter(
    "verifier_failure_to_acquire_total", "Images in which no usable face was found", ["method", "side"]
)
