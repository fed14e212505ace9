"""Assemble and run the gRPC server: servicers, health, reflection, limits, shutdown."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from verifier.config import Settings
from verifier.matching import Matcher, default_threshold
from verifier.pipeline import FaceEngine
from verifier.server.interceptors import MetricsInterceptor
from verifier.server.servicer import FaceVerifierServicer
from verifier.service import VerificationService
from verifier.v1 import verifier_pb2, verifier_pb2_grpc

log = logging.getLogger(__name__)

VERIFIER_SERVICE = verifier_pb2.DESCRIPTOR.services_by_name["FaceVerifier"].full_name


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def build_service(settings: Settings, engine: FaceEngine | None = None) -> VerificationService:
    engine = engine or FaceEngine.from_settings(settings)
    return VerificationService(
        engine, Matcher(engine.model_id, default_threshold(settings.matching)), settings.pipeline.image_workers
    )


def start_server(settings: Settings, service: VerificationService | None = None) -> RunningServer:
    """Start serving on ``settings.server.host:port`` (port 0 picks a free one)."""
    service = service or build_service(settings)
    limit = settings.server.max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.server.workers, thread_name_prefix="rpc"),
        interceptors=[MetricsInterceptor()],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    verifier_pb2_grpc.add_FaceVerifierServicer_to_server(FaceVerifierServicer(service), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (VERIFIER_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(f"{settings.server.host}:{settings.server.port}")
    server.start()
    for name in ("", VERIFIER_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s:%d (model %s)", VERIFIER_SERVICE, settings.server.host, port, service.model_id)
    return RunningServer(server, port, health_servicer)


def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then drain in-flight calls."""
    if settings.server.metrics_port is not None:
        start_http_server(settings.server.metrics_port, addr=settings.server.host)
    running = start_server(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down; draining for up to %.1f s", settings.server.grace_seconds)
    running.stop(settings.server.grace_seconds)
