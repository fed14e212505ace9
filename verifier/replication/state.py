"""How current a server's watch-list data is: what decisions and health report.

A primary's data is current by definition. A replica's is current up to the
last moment it is known to have held every change of its primary: the commit
time of the last change it applied, or the time of a heartbeat the primary
sent once the replica had everything before it. When the primary is
unreachable the replica keeps serving and that moment stops moving: its age is
what the health detail (Replication/Status), the metric and each decision's
``data_as_of`` report.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from verifier.replication import metrics


@dataclass(frozen=True)
class Freshness:
    role: str
    primary: str
    connected: bool
    data_as_of: float

    @property
    def age_seconds(self) -> float:
        return max(0.0, time.time() - self.data_as_of)


class ReplicaState:
    """The follower's view of its primary, shared with the servicers (thread-safe)."""

    def __init__(self, primary: str | None) -> None:
        self._lock = threading.Lock()
        self.primary = primary
        self._connected = False
        self._as_of = 0.0
        metrics.DATA_AGE.set_function(lambda: self.freshness().age_seconds)
        metrics.CONNECTED.set_function(lambda: 1.0 if self.freshness().connected else 0.0)

    def freshness(self) -> Freshness:
        with self._lock:
            if self.primary is None:
                return Freshness("primary", "", True, time.time())
            return Freshness("replica", self.primary, self._connected, self._as_of)

    def data_as_of(self) -> float:
        return self.freshness().data_as_of

    def known_current_at(self, moment: float) -> None:
        """The replica holds every change the primary committed before ``moment``."""
        with self._lock:
            self._as_of = max(self._as_of, moment)

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected

    def promoted(self) -> None:
        with self._lock:
            self.primary = None
