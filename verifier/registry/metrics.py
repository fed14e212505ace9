"""Prometheus metrics of the registry: whether its duplicate search serves, and if not, why."""

from __future__ import annotations

from prometheus_client import Gauge

AVAILABLE = Gauge(
    "verifier_registry_available",
    "1 while the registry's index serves; 0 while loading or out of service (the reason label says why: "
    "INDEX_NOT_READY loading, INDEX_UNAVAILABLE Milvus failed, timed out or drifted from the store)",
    ["state", "reason"],
)


def set_availability(state: str, reason: str) -> None:
    """Only the current state: one series, the others removed."""
    AVAILABLE.clear()
    AVAILABLE.labels(state, reason).set(1 if state == "serving" else 0)
