"""Every setting of the service, typed, with defaults that serve, read once.

Values come from the environment (``VERIFIER_<GROUP>__<NAME>``, for example
``VERIFIER_SERVER__PORT=50052``) so that a deployment changes behaviour without
touching code; nothing else in the package holds a threshold, limit or path.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class ModelSettings(BaseModel):
    """Where the model pack is described and cached, and how sessions run."""

    manifest: Path = REPO_ROOT / "models" / "manifest.toml"
    cache_dir: Path = REPO_ROOT / "models" / "cache"
    pack: str = "default"
    # "cpu", "cuda" (refused at start when ONNX Runtime has no CUDA provider) or
    # "auto" (CUDA when present, else CPU).
    execution_provider: Literal["cpu", "cuda", "auto"] = "auto"
    # Threads inside one inference while other requests are in flight: they
    # already keep every core busy, so one thread each serves best (README:
    # two threads for every inference cost 12 % of the throughput).
    intra_op_threads: int = Field(default=1, ge=1)
    # Threads inside one inference when it is the only analysis running, so an
    # idle gate answers one traveller with every core (1: never).
    idle_intra_op_threads: int = Field(default=2, ge=1)
    # Let the idle-time threads spin while waiting for work: a little lower
    # latency, but cycles taken from the next requests when load arrives.
    idle_allow_spinning: bool = False
    # Licence tokens the deployer accepts (a model's `requires_acceptance` in the
    # manifest): a pack holding a model whose token is not listed is refused at
    # start. Example: VERIFIER_MODELS__ACCEPT_LICENCES='["insightface-non-commercial"]'.
    accept_licences: tuple[str, ...] = ()


class ImagingSettings(BaseModel):
    """Limits on the images we accept: a chip photo is 10-30 KB, a capture a few hundred."""

    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 32
    formats: tuple[str, ...] = ("JPEG", "PNG", "JPEG2000")
    # A decoded image whose longer side exceeds this is decoded at a reduced
    # scale (JPEG) or resized: faces at the gate never need more.
    working_max_side: int = 1280


class DetectorSettings(BaseModel):
    min_score: float = Field(default=0.7, gt=0.0, lt=1.0, allow_inf_nan=False)
    nms_iou: float = Field(default=0.3, gt=0.0, le=1.0, allow_inf_nan=False)
    # Faces smaller than this (box side, original pixels) are not acquired.
    min_face_px: int = Field(default=24, ge=1)
    # Quality floor: a face whose eyes are closer than this (original pixels) is
    # refused with FACE_TOO_SMALL. The served threshold's false-match rate was
    # measured to hold down to 16 px (`verifier eval --condition downscale-16px`,
    # README); below it nobody has shown that it does. 0: no floor.
    min_eye_distance_px: float = Field(default=16.0, ge=0.0, allow_inf_nan=False)
    # Pad the image to the detector's aspect ratio instead of squashing it
    # (portrait chip photos into a 4:3 input).
    letterbox: bool = True


class PipelineSettings(BaseModel):
    # Add the mirror image's embedding to the face's: a little more accuracy for
    # one more embedder run per face.
    embed_mirror: bool = False
    # Scale of the landmark crop around the detected box.
    landmark_crop_scale: float = 1.0
    # Threads that analyse the probe and the reference image of one Verify side by
    # side (0: one after the other in the request's thread). Two suit two cores.
    image_workers: int = Field(default=2, ge=0)


class MatchingSettings(BaseModel):
    # Cosine threshold used until a calibration table is loaded, and the
    # false-match rate it stood for when measured (see README: LFW dev half).
    default_threshold: float = Field(default=0.45, ge=-1.0, le=1.0, allow_inf_nan=False)
    default_threshold_fmr: float = Field(default=1e-3, gt=0.0, lt=1.0, allow_inf_nan=False)
    # The server takes the threshold of the calibration table row for this FMR
    # (the nearest row at or below it: never a laxer one).
    target_fmr: float = Field(default=1e-3, gt=0.0, lt=1.0, allow_inf_nan=False)
    # Tables written by `verifier eval --calibrate`, one per pack: <pack>.json.
    calibration_dir: Path = REPO_ROOT / "models" / "calibration"
    # A table to use instead of calibration_dir/<pack>.json.
    calibration_file: Path | None = None


class EvaluationSettings(BaseModel):
    """How `verifier eval` measures accuracy (ISO/IEC 19795-1 terms)."""

    cache_dir: Path = REPO_ROOT / ".eval-cache"
    output_dir: Path = REPO_ROOT / "benchmarks" / "results" / "eval"
    # Images per model run when embedding a data set.
    batch_size: int = Field(default=32, ge=1)
    # Rows of the score matrix computed at once: bounds memory on large sets.
    chunk_rows: int = Field(default=1024, ge=1)
    fmr_targets: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    fpir_targets: tuple[float, ...] = (1e-2, 1e-3)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    # Subject-bootstrap replicates for intervals that respect correlated scores.
    bootstrap_replicates: int = Field(default=1000, ge=0)
    bootstrap_seed: int = 19795


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    workers: int = Field(default=8, ge=1)
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    grace_seconds: float = Field(default=5.0, ge=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)


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
    # Transport threads while admission is on: enough for every call running
    # or waiting plus cheap calls and refusals being answered, so that gRPC's
    # own executor queue (unbounded and unseen) stays empty.
    transport_threads: int = Field(default=48, ge=2)

    @model_validator(mode="after")
    def _threads_cover_the_bounds(self) -> "AdmissionSettings":
        if self.enabled and self.transport_threads <= self.max_in_flight + self.max_queue:
            raise ValueError(
                f"transport_threads ({self.transport_threads}) must exceed max_in_flight + max_queue "
                f"({self.max_in_flight + self.max_queue}), or calls would wait unseen in gRPC's executor"
            )
        return self


class WatchlistSettings(BaseModel):
    """The watch-list store, its search index and the identification operating point."""

    enabled: bool = True
    # Relative paths are under ``Settings.data_dir``.
    store_path: Path = Path("watchlist") / "store.sqlite3"
    # The FAISS index saved at shutdown, tagged with the store's change
    # sequence; None: always rebuild from the store at start.
    snapshot_path: Path | None = Path("watchlist") / "index.snapshot"
    # How long a write waits on another connection's lock before failing.
    busy_timeout_seconds: float = Field(default=5.0, gt=0)
    default_top_k: int = Field(default=10, ge=1)
    max_top_k: int = Field(default=100, ge=1)
    # Photos per person raise hit rates; 256 is the most a template key can hold.
    max_templates_per_subject: int = Field(default=16, ge=1, le=256)
    # Cosine score a candidate must reach, and the false-positive identification
    # rate it stood for when measured for the default pack (`python -m
    # benchmarks.identification`: LFW dev, 774 people enrolled, 13 of 1,311
    # searches for people not enrolled returned a candidate; FNIR 3.04 %). FPIR
    # grows with the size of the list; another pack needs its own value
    # (fast-legacy: 0.601, FNIR 8.9 %).
    threshold: float = Field(default=0.471, ge=-1.0, le=1.0, allow_inf_nan=False)
    threshold_fpir: float = Field(default=0.01, gt=0.0, le=1.0, allow_inf_nan=False)
    # While the store is missing or failing, how often to try to reopen it and
    # rebuild the index (the watch-lists stay out of service until it works).
    store_retry_seconds: float = Field(default=5.0, gt=0)
    # Quarantined templates named one by one in the log at load; the rest are counted.
    quarantine_log_limit: int = Field(default=50, ge=0)

    def store_file(self, data_dir: Path) -> Path:
        return data_dir / self.store_path

    def snapshot_file(self, data_dir: Path) -> Path | None:
        return None if self.snapshot_path is None else data_dir / self.snapshot_path


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


class Settings(BaseSettings):
    """The whole configuration; build it with :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="VERIFIER_", env_nested_delimiter="__")

    data_dir: Path = REPO_ROOT / "data"
    models: ModelSettings = ModelSettings()
    imaging: ImagingSettings = ImagingSettings()
    detector: DetectorSettings = DetectorSettings()
    pipeline: PipelineSettings = PipelineSettings()
    matching: MatchingSettings = MatchingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    server: ServerSettings = ServerSettings()
    watchlist: WatchlistSettings = WatchlistSettings()
    admission: AdmissionSettings = AdmissionSettings()
    security: SecuritySettings = SecuritySettings()
    audit: AuditSettings = AuditSettings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
