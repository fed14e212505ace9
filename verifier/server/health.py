"""Health per service, from what each service stands on.

A kiosk's client fails over on health, so each entry says whether the
service can answer *and record* its answers now:

- ``verifier.v1.FaceVerifier``: the audit trail takes records;
- ``verifier.v1.Gate``: that, and the gate's answer store takes answers;
- ``verifier.v1.Watchlist``: that, and the watch-list store is in service;
- ``verifier.v1.Registry``: that, and the registry's index is loaded.

The server's own entry ("") stays SERVING while the process serves (health,
audit reads). Every source calls :meth:`ServiceHealth.update` when its state
changes; the entries are computed afresh from all of them each time.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from grpc_health.v1 import health, health_pb2

if TYPE_CHECKING:
    from verifier.gate.transactions import TransactionStore
    from verifier.registry.service import RegistryService
    from verifier.security.audit import AuditLog
    from verifier.watchlist.service import WatchlistService

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServiceHealth:
    def __init__(self, servicer: health.HealthServicer, names: dict[str, str], audit: "AuditLog | None",
                 transactions: "TransactionStore", watchlist: "WatchlistService | None",
                 registry: "RegistryService | None") -> None:
        """``names``: the full service names of ``verifier``, ``gate``, ``watchlist`` and ``registry``."""
        self.servicer = servicer
        self.names = names
        self.audit = audit
        self.transactions = transactions
        self.watchlist = watchlist
        self.registry = registry
        self._lock = threading.Lock()

    def update(self, *_: object) -> None:
        """Set every entry from the present state of what it stands on (any arguments are ignored)."""
        with self._lock:
            recording = self.audit is None or self.audit.available
            states = {"": True, self.names["verifier"]: recording,
                      self.names["gate"]: recording and self.transactions.available}
            if self.watchlist is not None:
                store = self.watchlist.availability.serving
                states[self.names["watchlist"]] = recording and store
                if self.registry is not None:
                    states[self.names["registry"]] = recording and store and self.registry.ready
            for name, serving in states.items():
                self.servicer.set(name, SERVING if serving else NOT_SERVING)
