"""Mutual TLS and roles over a real TLS socket on 127.0.0.1: every RPC of every
service (FaceVerifier, Watchlist, Audit, health, reflection) called with every
role's certificate, held to the one table; refused calls are audited; clients
without a certificate, with an expired one or with one from another CA never
get past the handshake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tests.watchlist.samples import local_settings
from verifier.app import RunningServer, build_service, start_server
from verifier.client import reason_of
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.security.roles import PERMISSIONS, Role, allowed
from verifier.v1 import audit_pb2, audit_pb2_grpc, verifier_pb2, watchlist_pb2

SERVICES = (
    verifier_pb2.DESCRIPTOR.services_by_name["FaceVerifier"],
    watchlist_pb2.DESCRIPTOR.services_by_name["Watchlist"],
    audit_pb2.DESCRIPTOR.services_by_name["Audit"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
# Served by a library servicer that does not implement it (grpcio-health-checking 1.85).
UNIMPLEMENTED_BY_LIBRARY = {"/grpc.health.v1.Health/List"}
# What the handshake failing looks like to a client.
HANDSHAKE_REFUSED = grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def tls_server(settings: Settings, engine: FaceEngine, tls_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[RunningServer]:
    local = local_settings(settings, tmp_path_factory.mktemp("tls-server"))
    local.server.host, local.server.port = "127.0.0.1", 0
    local.watchlist.enabled = True
    local.security.tls_dir = tls_dir
    local.security.reflection = True
    running = start_server(local, build_service(local, engine))
    try:
        yield running
    finally:
        running.stop(grace=1.0)


def _channel(port: int, tls_dir: Path, stem: str | None) -> grpc.Channel:
    key = (tls_dir / f"{stem}.key").read_bytes() if stem else None
    cert = (tls_dir / f"{stem}.pem").read_bytes() if stem else None
    credentials = grpc.ssl_channel_credentials((tls_dir / "ca.pem").read_bytes(), key, cert)
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=[("grpc.use_local_subchannel_pool", 1)])


def _call(channel: grpc.Channel, service: Any, method: Any) -> None:
    """One call of ``method`` with an empty request, reading one response of a stream."""
    path = f"/{service.full_name}/{method.name}"
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    kwargs = {"request_serializer": request_class.SerializeToString,
              "response_deserializer": response_class.FromString}
    request = request_class()
    if method.client_streaming:
        responses = channel.stream_stream(path, **kwargs)(iter([request]), timeout=10)
        next(responses)
    elif method.server_streaming:
        responses = channel.unary_stream(path, **kwargs)(request, timeout=10)
        next(responses)
        responses.cancel()
    else:
        channel.unary_unary(path, **kwargs)(request, timeout=10)


def _wait_for_index(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while health.Check(health_pb2.HealthCheckRequest(service="verifier.v1.Watchlist"), timeout=5).status != \
            health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "the watch-list index never loaded"
        time.sleep(0.05)


def test_every_served_rpc_is_in_the_table() -> None:
    served = {f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods}
    assert served <= set(PERMISSIONS), sorted(served - set(PERMISSIONS))
    assert all(allowed(method, Role.ADMIN) for method in served)


def test_role_matrix_over_tls(tls_server: RunningServer, tls_dir: Path) -> None:
    forbidden = 0
    outcomes: dict[tuple[str, str], str] = {}
    for role in Role:
        with _channel(tls_server.port, tls_dir, role.value) as channel:
            _wait_for_index(channel)
            for service in SERVICES:
                for method in service.methods:
                    path = f"/{service.full_name}/{method.name}"
                    try:
                        _call(channel, service, method)
                        code, reason = grpc.StatusCode.OK, None
                    except grpc.RpcError as error:
                        code, reason = error.code(), reason_of(error)
                    outcomes[(role.value, path)] = code.name
                    if allowed(path, role):
                        # Reached the servicer: answered, or refused for the empty request itself.
                        refusals = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
                        if path not in UNIMPLEMENTED_BY_LIBRARY:
                            refusals.add(grpc.StatusCode.UNIMPLEMENTED)
                        assert code not in refusals, (role, path, code)
                    else:
                        forbidden += 1
                        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_FORBIDDEN"), \
                            (role, path, code, reason)
    assert outcomes[("kiosk", "/verifier.v1.Watchlist/EnrollSubject")] == "PERMISSION_DENIED"
    assert outcomes[("operator", "/verifier.v1.Watchlist/CreateWatchlist")] == "PERMISSION_DENIED"
    assert forbidden >= 19

    with _channel(tls_server.port, tls_dir, "auditor") as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        refused = stub.ListRecords(audit_pb2.ListRecordsRequest(outcome="PERMISSION_DENIED"), timeout=10).records
        kiosk = stub.ListRecords(audit_pb2.ListRecordsRequest(identity="kiosk"), timeout=10).records
    assert len(refused) == forbidden
    assert {(r.identity, r.role, r.reason, r.kind) for r in refused} >= {("kiosk", "kiosk", "ROLE_FORBIDDEN", "refusal")}
    assert any(r.rpc == "/verifier.v1.FaceVerifier/Verify" and r.outcome == "INVALID_ARGUMENT" for r in kiosk)


@pytest.mark.parametrize("stem", [None, "expired", "foreign"], ids=["no-certificate", "expired", "other-ca"])
def test_clients_without_a_valid_certificate_fail_the_handshake(
    tls_server: RunningServer, tls_dir: Path, stem: str | None
) -> None:
    with _channel(tls_server.port, tls_dir, stem) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == HANDSHAKE_REFUSED


def test_without_a_server_certificate_the_client_refuses(tls_server: RunningServer, tls_dir: Path) -> None:
    """A kiosk talking TLS to a plaintext port (or an impostor) gets nothing through either."""
    with grpc.insecure_channel(f"127.0.0.1:{tls_server.port}") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == HANDSHAKE_REFUSED
