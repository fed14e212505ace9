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

from verifier.calibration import serving_threshold
from verifier.config import Settings
from verifier.matching import Matcher
from verifier.pipeline import FaceEngine
from verifier.server.admission import AdmissionInterceptor
from verifier.server.interceptors import MetricsInterceptor
from verifier.server.servicer import FaceVerifierServicer
from verifier.server.watchlist_servicer import WatchlistServicer
from verifier.service import VerificationService
from verifier.v1 import verifier_pb2, verifier_pb2_grpc, watchlist_pb2, watchlist_pb2_grpc
from verifier.watchlist.service import WatchlistService

log = logging.getLogger(__name__)

VERIFIER_SERVICE = verifier_pb2.DESCRIPTOR.services_by_name["FaceVerifier"].full_name
WATCHLIST_SERVICE = watchlist_pb2.DESCRIPTOR.services_by_name["Watchlist"].full_name


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    watchlist: WatchlistService | None = None
    index_loader: threading.Thread | None = None

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds,
        then save the watch-list index and close its store."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.watchlist is not None:
            if self.index_loader is not None:
                self.index_loader.join()
            self.watchlist.close()


def build_service(settings: Settings, engine: FaceEngine | None = None) -> VerificationService:
    engine = engine or FaceEngine.from_settings(settings)
    return VerificationService(
        engine, Matcher(engine.model_id, serving_threshold(settings, engine.model_id)), settings.pipeline.image_workers
    )


def _load_index(watchlist: WatchlistService, health_servicer: health.HealthServicer) -> None:
    try:
        watchlist.load()
    except Exception:  # noqa: BLE001 - logged; identification stays NOT_SERVING
        log.exception("the watch-list index could not be loaded")
        return
    health_servicer.set(WATCHLIST_SERVICE, health_pb2.HealthCheckResponse.SERVING)


def start_server(
    settings: Settings, service: VerificationService | None = None, watchlist: WatchlistService | None = None
) -> RunningServer:
    """Start serving on ``settings.server.host:port`` (port 0 picks a free one).

    With ``settings.watchlist.enabled`` (or a ``watchlist`` given) the Watchlist
    service is served too; its health is NOT_SERVING until the index has been
    loaded in the background, and identification is refused until then.
    """
    service = service or build_service(settings)
    if watchlist is None and settings.watchlist.enabled:
        watchlist = WatchlistService.open(settings, service.engine)
    limit = settings.server.max_message_bytes
    admission = settings.admission
    # Metrics outermost, so refusals by admission are counted with their status.
    interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor()]
    if admission.enabled:
        interceptors.append(AdmissionInterceptor(admission))
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=admission.transport_threads if admission.enabled else settings.server.workers,
            thread_name_prefix="rpc",
        ),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    verifier_pb2_grpc.add_FaceVerifierServicer_to_server(FaceVerifierServicer(service), server)
    served = [VERIFIER_SERVICE]
    if watchlist is not None:
        watchlist_pb2_grpc.add_WatchlistServicer_to_server(WatchlistServicer(watchlist), server)
        served.append(WATCHLIST_SERVICE)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*served, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(f"{settings.server.host}:{settings.server.port}")
    server.start()
    for name in ("", VERIFIER_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    loader = None
    if watchlist is not None:
        health_servicer.set(WATCHLIST_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        loader = threading.Thread(target=_load_index, args=(watchlist, health_servicer), name="watchlist-index")
        loader.start()
    log.info("serving %s on %s:%d (model %s)", ", ".join(served), settings.server.host, port, service.model_id)
    return RunningServer(server, port, health_servicer, watchlist, loader)


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
