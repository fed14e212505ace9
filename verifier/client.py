"""The client that kiosks (and tests) use: ordered endpoints, the primary
first and then the fallback sites, with failover driven by health.

gRPC does the work it has mechanisms for. Each endpoint has its own channel
whose service config turns on client-side health checking (the channel is
usable only while the server reports the named service SERVING: a server
whose watch-lists are out of service, or that is draining, is left alone)
and a retry policy for the idempotent calls (UNAVAILABLE retried with
backoff, within the call's deadline). The channels' connectivity states are
watched through gRPC's subscriptions, never polled. What gRPC has no
mechanism for outside xDS is preferring endpoints in order; that is the one
step done here: a call goes to the first endpoint whose channel is READY, and
an idempotent call refused UNAVAILABLE moves on to the next within its
deadline. Writes are never replayed on another endpoint: a replica refuses
them (READ_ONLY_REPLICA) and a write's outcome must be checked, not guessed.

What a refusal says, read on the calling side: its reason (:func:`reason_of`)
and when to come back (:func:`retry_after`), from the rich status the server
attaches (verifier.server.errors).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from verifier.v1 import replication_pb2 as rp
from verifier.v1 import replication_pb2_grpc as rp_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

Response = TypeVar("Response")

# Calls that change nothing: safe to send again, here or to another site.
IDEMPOTENT = (
    {"service": "verifier.v1.FaceVerifier"},
    {"service": "verifier.v1.Watchlist", "method": "Identify"},
    {"service": "verifier.v1.Watchlist", "method": "ListWatchlists"},
    {"service": "verifier.v1.Watchlist", "method": "GetSubject"},
    {"service": "verifier.v1.Replication", "method": "Status"},
)


def service_config(health_service: str, attempts: int) -> str:
    """The channel's service config: round_robin (over one address: what
    client-side health checking needs), health checking, and the retry policy."""
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": health_service},
        "methodConfig": [{
            "name": list(IDEMPOTENT),
            "retryPolicy": {
                "maxAttempts": attempts, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }],
    })


def credentials_from(tls_dir: Path, stem: str) -> grpc.ChannelCredentials:
    """Mutual TLS with ``<stem>.pem``/``<stem>.key`` and ``ca.pem`` from ``tls_dir``
    (as ``verifier certs init`` writes them)."""
    return grpc.ssl_channel_credentials(
        root_certificates=(tls_dir / "ca.pem").read_bytes(), private_key=(tls_dir / f"{stem}.key").read_bytes(),
        certificate_chain=(tls_dir / f"{stem}.pem").read_bytes(),
    )


def reason_of(error: grpc.RpcError) -> str | None:
    """The machine-readable reason of a refused call."""
    info = _detail(error, error_details_pb2.ErrorInfo)
    return None if info is None else info.reason


def retry_after(error: grpc.RpcError) -> float | None:
    """Seconds the server asked the caller to wait before trying again (its
    RetryInfo), or None when it did not say."""
    info = _detail(error, error_details_pb2.RetryInfo)
    return None if info is None else info.retry_delay.ToMilliseconds() / 1000.0


def _detail(error: grpc.RpcError, kind: type[Message]) -> Any:
    """The first detail of the given message type in a call's rich status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in [] if status is None else status.details:
        if detail.Is(kind.DESCRIPTOR):
            found = kind()
            detail.Unpack(found)
            return found
    return None


class Client:
    """Ordered endpoints with health-driven failover (see the module docstring)."""

    def __init__(
        self, endpoints: list[str], credentials: grpc.ChannelCredentials | None = None,
        health_service: str = "verifier.v1.Watchlist", attempts: int = 3, server_name: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("a client needs at least one endpoint")
        options: list[tuple[str, Any]] = [
            ("grpc.service_config", service_config(health_service, attempts)),
            ("grpc.enable_retries", 1),
            # Reconnect to a site that came back soon, not after the default minutes of backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.endpoints = list(endpoints)
        self._channels = [
            grpc.secure_channel(e, credentials, options) if credentials else grpc.insecure_channel(e, options)
            for e in endpoints
        ]
        self._states = [grpc.ChannelConnectivity.IDLE] * len(endpoints)
        self._lock = threading.Lock()
        for i, channel in enumerate(self._channels):
            channel.subscribe(self._watcher(i), try_to_connect=True)

    def _watcher(self, i: int) -> Callable[[grpc.ChannelConnectivity], None]:
        def seen(state: grpc.ChannelConnectivity) -> None:
            with self._lock:
                self._states[i] = state
        return seen

    def _order(self) -> list[int]:
        """Endpoints to try: READY ones in configured order, then the rest in order."""
        with self._lock:
            states = list(self._states)
        ready = [i for i, s in enumerate(states) if s is grpc.ChannelConnectivity.READY]
        return ready + [i for i in range(len(states)) if i not in ready]

    def current(self) -> str:
        """The endpoint calls go to now."""
        return self.endpoints[self._order()[0]]

    def _read(self, call: Callable[[grpc.Channel], Callable[..., Response]], request: Any, timeout: float) -> Response:
        deadline = time.monotonic() + timeout
        last: grpc.RpcError | None = None
        for i in self._order():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return call(self._channels[i])(request, timeout=remaining)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                last = error
        if last is None:
            raise TimeoutError("no endpoint answered within the deadline")
        raise last

    def _write(self, call: Callable[[grpc.Channel], Callable[..., Response]], request: Any, timeout: float) -> Response:
        return call(self._channels[self._order()[0]])(request, timeout=timeout)

    # Idempotent reads: retried by gRPC, then moved to the next site.
    def verify(self, request: pb.VerifyRequest, timeout: float = 5.0) -> pb.VerifyResponse:
        return self._read(lambda c: pb_grpc.FaceVerifierStub(c).Verify, request, timeout)

    def compare(self, request: pb.CompareTemplatesRequest, timeout: float = 5.0) -> pb.CompareTemplatesResponse:
        return self._read(lambda c: pb_grpc.FaceVerifierStub(c).CompareTemplates, request, timeout)

    def identify(self, request: wl.IdentifyRequest, timeout: float = 5.0) -> wl.IdentifyResponse:
        return self._read(lambda c: wl_grpc.WatchlistStub(c).Identify, request, timeout)

    def subject(self, request: wl.GetSubjectRequest, timeout: float = 5.0) -> wl.GetSubjectResponse:
        return self._read(lambda c: wl_grpc.WatchlistStub(c).GetSubject, request, timeout)

    def status(self, timeout: float = 5.0) -> rp.StatusResponse:
        return self._read(lambda c: rp_grpc.ReplicationStub(c).Status, rp.StatusRequest(), timeout)

    # Writes: to the preferred site only.
    def enrol(self, request: wl.EnrollSubjectRequest, timeout: float = 10.0) -> wl.EnrollSubjectResponse:
        return self._write(lambda c: wl_grpc.WatchlistStub(c).EnrollSubject, request, timeout)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
