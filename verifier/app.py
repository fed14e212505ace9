"""The composition root: the one place that assembles the domain's services
with the transport, above both (docs/architecture.md).

The gRPC server (servicers, health, reflection, limits, shutdown) for
`verifier serve`, and the services the command line runs in its own process
(`verifier verify`, and `verifier screen` without ``--server``): the command
line gets them here, never from verifier.server.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from verifier import drift
from verifier.calibration import serving_threshold
from verifier.config import Settings
from verifier.gate.service import GateService
from verifier.gate.transactions import TransactionStore
from verifier.matching import Matcher
from verifier.pipeline import FaceEngine
from verifier.replication.feed import Feed
from verifier.replication.follower import Follower, SnapshotSource
from verifier.registry.service import RegistryService
from verifier.replication.state import ReplicaState
from verifier.server.admission import AdmissionInterceptor
from verifier.server.audit import AuditServicer
from verifier.server.bundles_servicer import BundlesServicer
from verifier.server.convert import sample_from_pb
from verifier.server.decoding import RequestDecodingInterceptor
from verifier.security.files import SERVICE_UMASK, tighten
from verifier.server.edge import (
    Edge,
    EdgeConfigError,
    build_edge,
    is_loopback,
    replica_credentials,
    require_audit_trail,
)
from verifier.server.gate_servicer import GateServicer, outcome_to_pb
from verifier.server.health import ServiceHealth
from verifier.server.interceptors import MetricsInterceptor
from verifier.server.registry_servicer import RegistryServicer
from verifier.server.replication_servicer import ReplicationServicer
from verifier.server.servicer import FaceVerifierServicer
from verifier.server.watchlist_servicer import WatchlistServicer
from verifier.service import VerificationService
from verifier.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    gate_pb2,
    gate_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    replication_pb2,
    replication_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
    watchlist_pb2,
    watchlist_pb2_grpc,
)
from verifier.watchlist.service import WatchlistService

log = logging.getLogger(__name__)

VERIFIER_SERVICE = verifier_pb2.DESCRIPTOR.services_by_name["FaceVerifier"].full_name
WATCHLIST_SERVICE = watchlist_pb2.DESCRIPTOR.services_by_name["Watchlist"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name
REPLICATION_SERVICE = replication_pb2.DESCRIPTOR.services_by_name["Replication"].full_name
BUNDLES_SERVICE = replication_pb2.DESCRIPTOR.services_by_name["Bundles"].full_name
GATE_SERVICE = gate_pb2.DESCRIPTOR.services_by_name["Gate"].full_name
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    watchlist: WatchlistService | None = None
    registry: RegistryService | None = None
    registry_supervisor: threading.Thread | None = None
    edge: Edge | None = None
    transactions: TransactionStore | None = None
    supervisor: threading.Thread | None = None
    storage_probe: threading.Thread | None = None
    follower: threading.Thread | None = None
    replica: ReplicaState | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds,
        then save the drift counts (the last save may be up to
        ``save_every`` outcomes behind) and the watch-list index, and close the stores."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.stopping.set()
        drift.MONITOR.save()
        if self.storage_probe is not None:
            self.storage_probe.join()
        if self.watchlist is not None:
            if self.supervisor is not None:
                self.supervisor.join()
            if self.follower is not None:
                self.follower.join()
            if self.registry_supervisor is not None:
                self.registry_supervisor.join()
            if self.registry is not None:
                self.registry.close()
            self.watchlist.close()
        if self.transactions is not None:
            self.transactions.close()
        if self.edge is not None:
            self.edge.close()


def build_service(settings: Settings, engine: FaceEngine | None = None) -> VerificationService:
    engine = engine or FaceEngine.from_settings(settings)
    return VerificationService(
        engine, Matcher(engine.template_spec, serving_threshold(settings, engine.model_id, engine.operating_point)),
        settings.pipeline.image_workers,
    )


def screen_locally(settings: Settings, request: gate_pb2.ScreenRequest) -> gate_pb2.ScreenResponse:
    """One gate transaction in this process (`verifier screen` without a server),
    against the configured watch-list store; an unavailable store is a REFER, as
    at the gate."""
    service = build_service(settings)
    watchlist = None
    if settings.watchlist.enabled:
        try:
            watchlist = WatchlistService.open(settings, service.engine)
            watchlist.load()
        except Exception:  # noqa: BLE001 - an unavailable store is a finding (REFER), reported in the answer
            watchlist = None
    gate = GateService(settings, service, watchlist)
    outcome = gate.screen([frame.data for frame in request.frames], sample_from_pb(request.reference, "reference"),
                          request.attempt)
    return outcome_to_pb(outcome, request.gate_id, request.transaction_id)

def _probe_storage(transactions: TransactionStore, every: float, stop: threading.Event) -> None:
    """Try the gate's answer store again while it is failing (the audit trail retries by itself)."""
    while not stop.wait(every):
        if not transactions.available:
            transactions.probe()


def start_server(
    settings: Settings, service: VerificationService | None = None, watchlist: WatchlistService | None = None
) -> RunningServer:
    """Start serving on ``settings.server.host:port`` (port 0 picks a free one).

    With ``settings.watchlist.enabled`` (or a ``watchlist`` given) the Watchlist
    service is served too, with health of its own: NOT_SERVING until its store
    is open and its index loaded in the background, and again whenever the
    store fails (each call then refused with the reason), while FaceVerifier
    serves on regardless. A store that cannot be opened never stops the start.
    """
    edge = build_edge(settings)
    # A replica starting without a store asks for its snapshot at once: it
    # arrives while the models load (a second of a cold start's ten).
    prefetched = None
    if (settings.replication.replica_of is not None and watchlist is None and settings.watchlist.enabled
            and not settings.watchlist.store_file(settings.data_dir).exists()):
        prefetched = SnapshotSource.for_settings(
            settings, replica_credentials(settings), WatchlistService.load_index_file).prefetch()
    service = service or build_service(settings)
    if watchlist is None and settings.watchlist.enabled:
        watchlist = WatchlistService.for_settings(settings, service.engine)
    limit = settings.server.max_message_bytes
    admission = settings.admission
    # Metrics outermost, so that every refusal is counted with its status; then
    # who may call (before anything is parsed or queued), admission, parsing,
    # and the audit record of what the call asked and got.
    interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor(), *edge.gatekeepers]
    if admission.enabled:
        interceptors.append(AdmissionInterceptor(admission))
    interceptors += [RequestDecodingInterceptor(), *edge.recorders]
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
    replica = ReplicaState(settings.replication.replica_of)
    verifier_pb2_grpc.add_FaceVerifierServicer_to_server(FaceVerifierServicer(service, replica.data_as_of), server)
    served = [VERIFIER_SERVICE, GATE_SERVICE]
    follower = None
    gate = settings.gate
    transactions = TransactionStore(gate.transactions_file(settings.data_dir), gate.transaction_retention_seconds,
                                    gate.max_transactions)
    gate_service = GateService(settings, service, watchlist)
    gate_pb2_grpc.add_GateServicer_to_server(GateServicer(gate_service, transactions, edge.audit, edge.tls), server)
    registry = None
    if settings.registry.enabled:
        if watchlist is None:
            raise ValueError("the registry keeps its tables in the watch-list store: enable the watch-lists too")
        # Refuses to start without the document key (RegistryKeyMissing).
        registry = RegistryService(settings, gate_service, watchlist, edge.audit)
        registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(registry, edge.tls), server)
        served.append(REGISTRY_SERVICE)
    if watchlist is not None:
        watchlist.read_only_for = settings.replication.replica_of
        watchlist_pb2_grpc.add_WatchlistServicer_to_server(WatchlistServicer(watchlist, replica.data_as_of), server)
        feed = Feed(watchlist, settings.replication)
        replication_pb2_grpc.add_ReplicationServicer_to_server(ReplicationServicer(
            feed, replica, settings.replication.snapshot_chunk_bytes, settings.data_dir / "replication",
        ), server)
        replication_pb2_grpc.add_BundlesServicer_to_server(BundlesServicer(watchlist, settings.bundles), server)
        served += [WATCHLIST_SERVICE, REPLICATION_SERVICE, BUNDLES_SERVICE]
        if settings.replication.replica_of is not None:
            follower = Follower(watchlist, settings.replication, replica, replica_credentials(settings), prefetched)
    if edge.audit is not None:
        audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(edge.audit, settings.audit.page_size), server)
        served.append(AUDIT_SERVICE)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if edge.reflection:
        reflection.enable_server_reflection(
            (*served, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
    port = edge.bind(server, f"{settings.server.host}:{settings.server.port}")
    server.start()
    # Each entry says whether its service can answer and record its answers (verifier.server.health).
    report = ServiceHealth(health_servicer, {"verifier": VERIFIER_SERVICE, "gate": GATE_SERVICE,
                                             "watchlist": WATCHLIST_SERVICE, "registry": REGISTRY_SERVICE},
                           edge.audit, transactions, watchlist, registry)
    if edge.audit is not None:
        edge.audit.on_availability(report.update)
    transactions.on_availability(report.update)
    report.update()
    running = RunningServer(server, port, health_servicer, watchlist, registry, edge=edge,
                            transactions=transactions, replica=replica)
    running.storage_probe = threading.Thread(
        target=_probe_storage, args=(transactions, settings.server.storage_retry_seconds, running.stopping),
        name="storage-probe", daemon=True)
    running.storage_probe.start()
    if watchlist is not None:
        watchlist.on_availability(report.update)
        running.supervisor = threading.Thread(
            target=watchlist.supervise, args=(running.stopping,), name="watchlist-supervisor", daemon=True
        )
        running.supervisor.start()
        if registry is not None:
            running.registry_supervisor = threading.Thread(
                target=registry.supervise, args=(running.stopping, report.update),
                name="registry-supervisor", daemon=True,
            )
            running.registry_supervisor.start()
        if follower is not None:
            running.follower = threading.Thread(
                target=follower.run, args=(running.stopping,), name="replica-follower", daemon=True
            )
            running.follower.start()
    log.info("serving %s on %s:%d (model %s, %s%s)", ", ".join(served), settings.server.host, port, service.model_id,
             "mutual TLS" if edge.tls else "no TLS",
             f", read-only replica of {settings.replication.replica_of}" if follower is not None else "")
    return running


def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then drain in-flight calls. Before anything
    is opened: owner-only data (umask 077; looser modes found are tightened) and
    an audit trail beside any existing store."""
    os.umask(SERVICE_UMASK)
    try:
        tighten(settings)
    except OSError as error:
        raise EdgeConfigError(f"cannot make the data folder owner-only: {error}") from error
    require_audit_trail(settings)
    if settings.server.metrics_port is not None:
        host = settings.server.metrics_host
        if not is_loopback(host):
            log.warning("metrics served on %s:%d: plaintext, unauthenticated HTTP (request counts and latencies by "
                        "method, watch-list names, replica state)", host, settings.server.metrics_port)
        start_http_server(settings.server.metrics_port, addr=host)
    running = start_server(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down; draining for up to %.1f s", settings.server.grace_seconds)
    running.stop(settings.server.grace_seconds)
