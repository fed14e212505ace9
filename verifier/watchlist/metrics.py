"""Prometheus metrics of the watch-lists: whether they serve, and what was left out."""

from __future__ import annotations

from prometheus_client import Gauge

QUARANTINED = Gauge(
    "verifier_watchlist_quarantined_templates",
    "Stored templates left out of the index at the last load because they fail the template checks",
)
UNMIGRATED = Gauge(
    "verifier_watchlist_unmigrated_subjects",
    "Subjects without a template of the served model, per watch-list: a list with any is refused until migrated",
    ["watchlist"],
)
AVAILABLE = Gauge(
    "verifier_watchlist_available",
    "1 while the watch-lists serve; 0 while loading or out of service (the reason label says why)",
    ["state", "reason"],
)


def set_availability(state: str, reason: str) -> None:
    """Show only the current state: one series at 1 (serving) or 0 (not), the others removed."""
    AVAILABLE.clear()
    AVAILABLE.labels(state, reason).set(1 if state == "serving" else 0)
