"""Prometheus metrics of the transport: what was asked, how long it took, what failed."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
SHED = Counter(
    "verifier_admission_shed_total",
    "Calls refused OVERLOADED before any work, by method and the bound reached (server or caller)",
    ["method", "bound"],
)
EXPIRED = Counter(
    "verifier_deadline_expired_total",
    "Calls dropped because their deadline passed, by method and the stage they did not start (queue, decode, ...)",
    ["method", "stage"],
)
IN_FLIGHT = Gauge("verifier_admission_in_flight", "Expensive calls running now")
QUEUED = Gauge("verifier_admission_queued", "Expensive calls waiting for a slot now")
