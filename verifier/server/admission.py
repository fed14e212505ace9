"""Admission control and deadlines: one interceptor in front of every servicer.

Expensive calls (those that decode images or search, :data:`ADMITTED`) take a
slot before they run. A bounded number run at once and a bounded number wait;
beyond either bound, or beyond one caller's share, a call is refused at once
with RESOURCE_EXHAUSTED and the reason OVERLOADED, before any work is done on
it. The refusal says when to come back (google.rpc.RetryInfo, and gRPC's
``grpc-retry-pushback-ms``), from the work ahead and the measured rate, so that
refused callers return spread out instead of all at once. A waiting call gets a
slot in fair-share order: the caller that has used the least server time goes
first, and calls far costlier than a gate's are charged more than their time,
so a client sending expensive images is served less often than a gate sending
cheap ones, and cannot starve it. A call that, at the measured time per
call, could not finish within its deadline is refused the same way instead of
queued, or instead of started when its turn comes too late.

Cheap calls (health, reflection, CompareTemplates, listing, reading and
removing, creating watch-lists) are not admitted: they cost about as much as a
refusal would, and health must answer under overload.

Every call, cheap or not, runs with its caller's deadline in
:mod:`verifier.deadlines`, so the core drops work whose caller has given up;
a call whose deadline passes while it waits for a slot is dropped there.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from verifier import costs, deadlines
from verifier.deadlines import Deadline
from verifier.edge_config import AdmissionSettings
from verifier.errors import Reason, VerifierError
from verifier.server import metrics
from verifier.server.errors import status_for
from verifier.v1 import gate_pb2, registry_pb2, verifier_pb2, watchlist_pb2

_VERIFIER = verifier_pb2.DESCRIPTOR.services_by_name["FaceVerifier"].full_name
_GATE = gate_pb2.DESCRIPTOR.services_by_name["Gate"].full_name
_WATCHLIST = watchlist_pb2.DESCRIPTOR.services_by_name["Watchlist"].full_name
_REGISTRY = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
ADMITTED = frozenset({
    f"/{_VERIFIER}/Verify",
    f"/{_VERIFIER}/ExtractTemplate",
    f"/{_WATCHLIST}/EnrollSubject",
    f"/{_WATCHLIST}/Identify",
    # Streams are not admitted per call (they would hold a slot for seconds):
    # the gate servicer bounds open streams itself (gate.max_streams).
    f"/{_GATE}/Screen",
    f"/{_REGISTRY}/Register",
    f"/{_REGISTRY}/VerifyTraveller",
    f"/{_REGISTRY}/UpdateTraveller",
})
# gRPC reports "no deadline" as a remaining time of centuries.
_NO_DEADLINE_S = 1e8
# Weight of the latest call in the moving average of an admitted call's wall time.
_WALL_SMOOTHING = 0.1


def caller_key(context: grpc.ServicerContext, mode: str = "host") -> str:
    """Who is calling, for fairness: the certificate's common name when the
    connection was authenticated with a client certificate, else the peer's
    address, without the port (``mode="host"``: many connections from one
    client are one caller) or with it (``"connection"``)."""
    names = context.auth_context().get("x509_common_name")
    if names:
        return "cn:" + names[0].decode("utf-8", "replace")
    peer = context.peer()
    if mode == "connection" or not peer.startswith(("ipv4:", "ipv6:")):
        return peer
    return peer.rsplit(":", 1)[0]


@dataclass
class _Caller:
    used_s: float
    running: int = 0
    waiting: deque["_Ticket"] = field(default_factory=deque)
    # When the caller last had nothing running or waiting (None: busy now).
    idle_since: float | None = None


@dataclass
class _Ticket:
    order: int
    granted: bool = False


class Admission:
    """Slots for expensive work, shared fairly among callers (thread-safe).

    Fair share is start-time fair queuing on measured service: each caller
    accumulates the CPU time its calls used (on every thread: a Verify runs its
    two images side by side, and a costly image costs the sender, not the
    others), the waiting caller with
    the least goes next, and a caller that arrives after being idle starts
    level with the least-served active caller, so idleness banks no credit.

    While several callers are active, none runs more than its share of the
    slots (``max_in_flight`` over the active callers, at least one). A caller
    counts as active for ``idle_grace_seconds`` after its last call ends, and a
    freed slot is held for it in that time if the caller that would take the
    slot has used ``hold_margin_seconds`` more CPU than it: a gate
    sends its next call a moment after the last answer, and without the grace a
    bulk client sending back to back would take every slot a gate frees in that
    moment. A slot may then stay free for up to the grace; on two cores the
    other slots keep both busy. Callers idle longer are forgotten, so memory
    stays bounded by the callers with recent work.
    """

    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._callers: dict[str, _Caller] = {}
        self._running = 0
        self._queued = 0
        self._order = itertools.count()
        # Wall time of an admitted call (moving average; 0 until one has run)
        # and the callers refused lately (decaying over ``retry_window_seconds``),
        # for retry hints and for refusing calls that cannot finish in time.
        self._call_wall_s = 0.0
        self._refused = 0.0
        self._refused_at = time.monotonic()

    @contextmanager
    def slot(self, key: str, deadline: Deadline | None) -> Iterator[None]:
        """Hold a slot for the block; raises OVERLOADED at once when the
        bounds are reached, DEADLINE_EXCEEDED when the deadline passes first.
        The caller is charged the CPU the block used, on every thread that
        worked for it (:mod:`verifier.costs`)."""
        self._enter(key, deadline)
        started = time.monotonic()
        meter: costs.CpuMeter | None = None
        try:
            with costs.metering() as meter:
                yield
        finally:
            self._leave(key, meter.seconds if meter is not None else 0.0, time.monotonic() - started)

    def _enter(self, key: str, deadline: Deadline | None) -> None:
        limits = self.settings
        with self._lock:
            self._prune(time.monotonic())
            caller = self._callers.get(key)
            if caller is None:
                caller = self._callers[key] = _Caller(min((c.used_s for c in self._callers.values()), default=0.0))
            caller.idle_since = None
            if caller.running + len(caller.waiting) >= limits.max_per_caller:
                self._mark_if_idle(caller)
                raise VerifierError(
                    Reason.OVERLOADED, "this caller has its share of work running and waiting; retry later",
                    bound="caller", limit=limits.max_per_caller,
                    retry_after_ms=self._retry_after_ms(caller.running + len(caller.waiting), self._share()),
                )
            # A free slot is taken at once by a caller under its share, unless
            # it is held for a less-served claimant (waiting, or between calls).
            if (
                self._running < limits.max_in_flight
                and self._under_share(caller)
                and not self._held_for_another(caller)
                and not any(
                    c.waiting and self._under_share(c) and c.used_s < caller.used_s for c in self._callers.values()
                )
            ):
                self._start(caller)
                return
            if self._queued >= limits.max_queue:
                self._mark_if_idle(caller)
                raise VerifierError(
                    Reason.OVERLOADED, "the server is at capacity; retry later",
                    bound="server", in_flight=self._running, queued=self._queued,
                    retry_after_ms=self._retry_after_ms(self._running + self._queued, limits.max_in_flight),
                )
            if self._cannot_finish(deadline, self._queued / limits.max_in_flight + 1):
                self._mark_if_idle(caller)
                raise self._too_late()
            ticket = _Ticket(next(self._order))
            caller.waiting.append(ticket)
            self._queued += 1
            metrics.QUEUED.set(self._queued)
            while not ticket.granted:
                remaining = None if deadline is None else deadline.remaining()
                if remaining is not None and remaining <= 0:
                    break
                # Wake at least once a grace period: a slot held back for an idle
                # caller is released to the waiters once its grace has passed.
                slice_s = limits.idle_grace_seconds if remaining is None else min(remaining, limits.idle_grace_seconds)
                if not self._changed.wait_for(lambda: ticket.granted, timeout=slice_s):
                    self._prune(time.monotonic())
                    self._grant()
            if ticket.granted:
                if not self._cannot_finish(deadline, 1):
                    return
                self._finish(caller)
                raise self._too_late()
            caller.waiting.remove(ticket)
            self._queued -= 1
            metrics.QUEUED.set(self._queued)
            self._mark_if_idle(caller)
        raise deadline.expire("queue")  # type: ignore[union-attr]

    def _retry_after_ms(self, ahead: int, slots: int) -> int:
        """When a refused caller should come back: the calls ahead of it (``ahead``
        plus the callers refused lately, who will return too) served ``slots`` at
        a time at the measured wall time per call, jittered, within the bounds."""
        limits = self.settings
        now = time.monotonic()
        self._refused = self._refused * math.exp(-(now - self._refused_at) / limits.retry_window_seconds) + 1.0
        self._refused_at = now
        per_call_s = max(self._call_wall_s, limits.retry_after_min_seconds)
        wait_s = (ahead + self._refused) * per_call_s / max(1, slots)
        wait_s *= random.uniform(1.0, 1.0 + limits.retry_jitter)
        wait_s = min(limits.retry_after_max_seconds, max(limits.retry_after_min_seconds, wait_s))
        return round(wait_s * 1000.0)

    def _cannot_finish(self, deadline: Deadline | None, calls: float) -> bool:
        """Whether, at the measured wall time per call, ``calls`` calls' time
        (those ahead of this one and its own) is more than its deadline leaves."""
        return (
            self.settings.deadline_aware and deadline is not None
            and deadline.remaining() < calls * self._call_wall_s
        )

    def _too_late(self) -> VerifierError:
        return VerifierError(
            Reason.OVERLOADED, "the call cannot finish within its deadline at the present load; retry later",
            bound="deadline", expected_ms=round(self._call_wall_s * 1000.0),
            retry_after_ms=self._retry_after_ms(self._running + self._queued, self.settings.max_in_flight),
        )

    def _charge(self, cpu_s: float) -> float:
        """Fair-share charge of a call that used ``cpu_s``: its CPU, weighted up
        in proportion beyond ``heavy_call_seconds`` (capped), so that callers of
        outsized calls yield to callers of ordinary ones."""
        limits = self.settings
        return cpu_s * min(limits.heavy_weight_max, max(1.0, cpu_s / limits.heavy_call_seconds))

    def _share(self) -> int:
        """Slots one caller may hold while the active callers compete."""
        return max(1, self.settings.max_in_flight // max(1, len(self._callers)))

    def _under_share(self, caller: _Caller) -> bool:
        return caller.running < self._share()

    def _start(self, caller: _Caller) -> None:
        caller.running += 1
        self._running += 1
        metrics.IN_FLIGHT.set(self._running)

    def _leave(self, key: str, used_s: float, wall_s: float) -> None:
        with self._lock:
            caller = self._callers[key]
            caller.used_s += self._charge(used_s)
            self._call_wall_s += _WALL_SMOOTHING * (wall_s - self._call_wall_s)
            self._finish(caller)

    def _finish(self, caller: _Caller) -> None:
        """Give a caller's slot back and hand free slots on (lock held)."""
        caller.running -= 1
        self._running -= 1
        self._mark_if_idle(caller)
        self._prune(time.monotonic())
        self._grant()
        metrics.IN_FLIGHT.set(self._running)

    def _held_for_another(self, caller: _Caller) -> bool:
        """Whether a free slot is kept from ``caller`` for a caller between calls
        (within its grace) that has used at least ``hold_margin_seconds`` less
        CPU: a gate about to send its next call, not one of many equals."""
        margin = self.settings.hold_margin_seconds
        return any(
            other is not caller and other.idle_since is not None and self._under_share(other)
            and other.used_s + margin <= caller.used_s
            for other in self._callers.values()
        )

    def _grant(self) -> None:
        """Give free slots to the least-served claimants; a slot whose least-served
        claimant is between calls is held for it (until its grace runs out)."""
        granted = False
        while self._running < self.settings.max_in_flight and self._queued:
            waiting = [c for c in self._callers.values() if c.waiting and self._under_share(c)]
            if not waiting:
                break
            nxt = min(waiting, key=lambda c: (c.used_s, c.waiting[0].order))
            if self._held_for_another(nxt):
                break
            nxt.waiting.popleft().granted = True
            self._queued -= 1
            self._start(nxt)
            granted = True
        metrics.QUEUED.set(self._queued)
        if granted:
            self._changed.notify_all()

    @staticmethod
    def _mark_if_idle(caller: _Caller) -> None:
        if not caller.running and not caller.waiting:
            caller.idle_since = time.monotonic()

    def _prune(self, now: float) -> None:
        """Forget callers idle for longer than the grace."""
        grace = self.settings.idle_grace_seconds
        for key in [k for k, c in self._callers.items() if c.idle_since is not None and now - c.idle_since > grace]:
            del self._callers[key]


def _remaining_s(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE_S else remaining


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Runs every unary call under its caller's deadline, and expensive ones
    (:data:`ADMITTED`) only once :class:`Admission` gives them a slot."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.admission = Admission(settings)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        path = handler_call_details.method
        method = path.rsplit("/", 1)[-1]
        admitted = path in ADMITTED
        inner = handler.unary_unary

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            with deadlines.deadline_after(_remaining_s(context)) as deadline:
                try:
                    if not admitted:
                        return inner(request, context)
                    try:
                        with self.admission.slot(caller_key(context, self.settings.caller_key), deadline):
                            return inner(request, context)
                    except VerifierError as error:  # refused or expired before the handler ran
                        if error.reason is Reason.OVERLOADED:
                            metrics.SHED.labels(method, error.details.get("bound", "server")).inc()
                        context.abort_with_status(status_for(error))
                finally:
                    if deadline is not None and deadline.expired_stage is not None:
                        metrics.EXPIRED.labels(method, deadline.expired_stage).inc()

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
