"""Settings of the serving edge: the listener, admission control, mutual TLS
and roles, and the audit trail. Groups of :class:`verifier.config.Settings`
(``VERIFIER_SERVER__*``, ``VERIFIER_ADMISSION__*``, ``VERIFIER_SECURITY__*``,
``VERIFIER_AUDIT__*``), kept apart so that each file reads in one sitting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    workers: int = Field(default=8, ge=1)
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    grace_seconds: float = Field(default=5.0, ge=0)
    # Prometheus metrics over plain, unauthenticated HTTP (no TLS, no roles:
    # README, Security) on this port; None: not served.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Where the metrics listen: loopback, whatever `host` is, so that a server
    # on 0.0.0.0 with mutual TLS does not open a plaintext port beside it. A
    # scraper elsewhere needs an explicit address here (logged as a warning).
    metrics_host: str = "127.0.0.1"
    # While the audit trail or the gate's answer store cannot be written (disk
    # full, I/O error, read-only), how often it is tried again; the services
    # that record decisions report NOT_SERVING until it can.
    storage_retry_seconds: float = Field(default=1.0, gt=0, le=60)


class AdmissionSettings(BaseModel):
    """How much expensive work (Verify, ExtractTemplate, EnrollSubject, Identify)
    the server takes on at once, and how it shares that among callers.

    Beyond the bounds a call is refused at once with RESOURCE_EXHAUSTED and the
    reason OVERLOADED: on two cores a queue longer than a few calls only turns
    every answer into a late one (README, overload benchmark).
    """

    # False: every call goes straight to its handler (the behaviour before
    # admission control; kept to measure it side by side).
    enabled: bool = True
    # Expensive calls running at once. A two-image Verify already keeps both
    # cores busy with its two image workers; a few more hide the hand-offs.
    max_in_flight: int = Field(default=4, ge=1)
    # Expensive calls waiting for a slot, all callers together.
    max_queue: int = Field(default=8, ge=0)
    # One caller's calls running and waiting together: a bulk client cannot
    # fill the queue and starve the gates.
    max_per_caller: int = Field(default=4, ge=1)
    # Who a caller is when no authenticated identity came with the call:
    # "host", its address without the port, so a client opening many
    # connections is still one caller; "connection", host and port, for a
    # benchmark on loopback, where every client shares one host.
    caller_key: Literal["host", "connection"] = "host"
    # How long a caller whose calls have all ended still counts as active when
    # slots are shared out: a gate sends its next call within a few ms of the
    # last answer, and its slot is held for it that long.
    idle_grace_seconds: float = Field(default=0.03, gt=0)
    # A slot is held for a caller between calls only if the one that would take
    # it has used this much more CPU (a bulk sender's costly calls, not one of
    # many gates alike: holding a slot among equals only loses throughput).
    hold_margin_seconds: float = Field(default=0.1, ge=0)
    # A call is charged the CPU it used; one that used more than this is charged
    # more than that, in proportion (up to ``heavy_weight_max`` times): a gate's
    # two-image Verify uses well under it, a Verify of maximum-cost images about
    # 3.5 times it, so their sender gets about a third of an equal share of CPU.
    heavy_call_seconds: float = Field(default=0.2, gt=0)
    heavy_weight_max: float = Field(default=10.0, ge=1)
    # A refusal tells the caller when to come back (google.rpc.RetryInfo and
    # grpc-retry-pushback-ms): the work ahead of it (running, queued and the
    # callers refused within ``retry_window_seconds``) over the measured rate,
    # spread by up to ``retry_jitter`` so refused callers do not return together,
    # within [retry_after_min_seconds, retry_after_max_seconds].
    retry_after_min_seconds: float = Field(default=0.05, gt=0)
    retry_after_max_seconds: float = Field(default=5.0, gt=0)
    retry_window_seconds: float = Field(default=1.0, gt=0)
    retry_jitter: float = Field(default=0.5, ge=0)
    # A call that, at the measured wall time per call, cannot finish within its
    # deadline is refused (OVERLOADED, bound "deadline") instead of queued, or
    # instead of started when its turn comes too late: its CPU would be spent
    # on an answer nobody waits for.
    deadline_aware: bool = True
    # Transport threads while admission is on: enough for every call running
    # or waiting plus cheap calls and refusals being answered, so that gRPC's
    # own executor queue (unbounded and unseen) stays empty.
    transport_threads: int = Field(default=48, ge=2)

    @model_validator(mode="after")
    def _bounds_consistent(self) -> "AdmissionSettings":
        if self.retry_after_min_seconds > self.retry_after_max_seconds:
            raise ValueError(
                f"retry_after_min_seconds ({self.retry_after_min_seconds}) exceeds "
                f"retry_after_max_seconds ({self.retry_after_max_seconds})"
            )
        if self.enabled and self.transport_threads <= self.max_in_flight + self.max_queue:
            raise ValueError(
                f"transport_threads ({self.transport_threads}) must exceed max_in_flight + max_queue "
                f"({self.max_in_flight + self.max_queue}), or calls would wait unseen in gRPC's executor"
            )
        return self


class SecuritySettings(BaseModel):
    """Mutual TLS and what a server without it may do.

    TLS is on when ``tls_dir`` is set (it holds ``server.pem``, ``server.key``
    and ``ca.pem``, as ``verifier certs init`` writes them) or when all three
    of ``cert_file``, ``key_file`` and ``ca_file`` are; then every client must
    present a certificate signed by the CA, and its role decides what it may
    call. Without TLS the server binds a loopback address only, and every
    local caller is treated as an administrator.
    """

    tls_dir: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    # Serve without TLS on a non-loopback address (logged as a warning): for a
    # network that already authenticates, never for a gate.
    allow_insecure: bool = False
    # Server reflection; None: on without TLS, off with it.
    reflection: bool | None = None

    def tls_files(self) -> tuple[Path, Path, Path] | None:
        """(certificate, key, CA) paths, or None when TLS is not configured."""
        if self.cert_file is not None or self.key_file is not None or self.ca_file is not None:
            if self.cert_file is None or self.key_file is None or self.ca_file is None:
                raise ValueError("set all of cert_file, key_file and ca_file, or tls_dir")
            return self.cert_file, self.key_file, self.ca_file
        if self.tls_dir is not None:
            return self.tls_dir / "server.pem", self.tls_dir / "server.key", self.tls_dir / "ca.pem"
        return None


class AuditSettings(BaseModel):
    """The hash-chained audit trail of every watch-list change and decision."""

    # The server's trail (off only to measure its cost); an offline
    # `watchlist import` is recorded whatever this says.
    enabled: bool = True
    # Relative paths are under ``Settings.data_dir``.
    path: Path = Path("audit") / "audit.sqlite3"
    # Decision records are written in batches at most this long after their
    # decision was answered: the most a crash can lose (changes: nothing).
    commit_window_seconds: float = Field(default=0.2, gt=0, le=1.0)
    busy_timeout_seconds: float = Field(default=5.0, gt=0)
    # Most records one ListRecords page returns.
    page_size: int = Field(default=500, ge=1)

    def file(self, data_dir: Path) -> Path:
        return data_dir / self.path
