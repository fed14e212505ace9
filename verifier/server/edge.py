"""The server's edge: transport security, who may call what, and the audit
trail, built from settings in one place so that ``app.py`` only plugs it in.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

import grpc

from verifier.config import Settings
from verifier.security.audit import AuditLog
from verifier.server.audit import AuditInterceptor
from verifier.server.authorization import AuthorizationInterceptor

log = logging.getLogger(__name__)


class EdgeConfigError(Exception):
    """The server must not start as configured (TLS files unreadable, an insecure public bind)."""


@dataclass
class Edge:
    """Credentials, interceptors and the audit log of one server."""

    credentials: grpc.ServerCredentials | None
    audit: AuditLog | None
    reflection: bool
    # Decide whether a call may run at all, before its request is even parsed.
    gatekeepers: list[grpc.ServerInterceptor]
    # Record what a call asked and what became of it (they read the parsed request).
    recorders: list[grpc.ServerInterceptor]

    @property
    def tls(self) -> bool:
        return self.credentials is not None

    def bind(self, server: grpc.Server, address: str) -> int:
        if self.credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.credentials)

    def close(self) -> None:
        """Write the decisions still queued and close the audit trail."""
        if self.audit is not None:
            self.audit.close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only (anyone
    who reaches it is already on the machine)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    try:
        files = settings.security.tls_files()
    except ValueError as error:
        raise EdgeConfigError(str(error)) from error
    if files is None:
        host = settings.server.host
        if not is_loopback(host):
            if not settings.security.allow_insecure:
                raise EdgeConfigError(
                    f"refusing to serve {host} without TLS: set VERIFIER_SECURITY__TLS_DIR (see `verifier certs "
                    "init`), or VERIFIER_SECURITY__ALLOW_INSECURE=true on a network that authenticates callers"
                )
            log.warning("serving %s WITHOUT TLS (allow_insecure): anyone who reaches the port is an administrator",
                        host)
        else:
            log.warning("serving without TLS on loopback: every local caller acts as an administrator")
        return None
    cert, key, ca = files
    try:
        chain, private_key, roots = cert.read_bytes(), key.read_bytes(), ca.read_bytes()
    except OSError as error:
        raise EdgeConfigError(f"cannot read TLS file {error.filename}: {error.strerror}") from error
    return grpc.ssl_server_credentials([(private_key, chain)], root_certificates=roots, require_client_auth=True)


def replica_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """What a replica shows its primary: the replica certificate from
    ``security.tls_dir`` (named by ``replication.client_stem``) and the CA to
    check the primary's; None without TLS (loopback development)."""
    directory = settings.security.tls_dir
    if directory is None:
        return None
    stem = settings.replication.client_stem
    try:
        return grpc.ssl_channel_credentials(
            root_certificates=(directory / "ca.pem").read_bytes(),
            private_key=(directory / f"{stem}.key").read_bytes(),
            certificate_chain=(directory / f"{stem}.pem").read_bytes(),
        )
    except OSError as error:
        raise EdgeConfigError(f"cannot read the replica's TLS file {error.filename}: {error.strerror}") from error


def require_audit_trail(settings: Settings) -> None:
    """Refuse to serve a store whose audit trail is gone: a server that began a
    new trail by itself would hide whatever was done while the old one was
    lost. Restore it from backup, or begin a new one on purpose with
    `verifier audit begin --reason TEXT`, which records why as its first record."""
    store, trail = settings.watchlist.store_file(settings.data_dir), settings.audit.file(settings.data_dir)
    if settings.audit.enabled and store.exists() and not trail.exists():
        raise EdgeConfigError(
            f"the watch-list store {store} exists but its audit trail {trail} does not: restore the trail from "
            "backup, or begin a new one on purpose with `verifier audit begin --reason TEXT` (recorded in it)"
        )


def build_edge(settings: Settings) -> Edge:
    """The edge ``settings`` ask for; raises :class:`EdgeConfigError` rather than serve insecurely."""
    credentials = _credentials(settings)
    tls = credentials is not None
    audit = None
    if settings.audit.enabled:
        audit = AuditLog.for_settings(settings)
    recorders: list[grpc.ServerInterceptor] = [] if audit is None else [AuditInterceptor(audit, tls)]
    reflection = settings.security.reflection if settings.security.reflection is not None else not tls
    return Edge(credentials, audit, reflection, [AuthorizationInterceptor(tls, audit)], recorders)
