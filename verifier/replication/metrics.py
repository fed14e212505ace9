"""Prometheus metrics of replication: how old a replica's data is, how far behind it runs."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

DATA_AGE = Gauge(
    "verifier_replica_data_age_seconds",
    "Seconds since the moment up to which this server is known to hold every change of its primary (0 on a primary)",
)
CONNECTED = Gauge("verifier_replica_connected", "1 while a replica is connected to its primary (1 on a primary)")
APPLY_LAG = Histogram(
    "verifier_replica_apply_lag_seconds",
    "From a change's commit on the primary to its durable application on this replica",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
