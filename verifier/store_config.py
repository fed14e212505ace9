"""Settings of the stores: watch-lists, the traveller registry, replication
and partner bundles, and the Milvus client both stores' indexes may use.

Part of the one typed configuration (:mod:`verifier.config` gathers them into
``Settings``; read them through :func:`verifier.config.get_settings`), kept in
a module of their own as :mod:`verifier.edge_config` keeps the transport's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class MilvusClientSettings(BaseModel):
    """How a store reaches its Milvus collections (``index = milvus``): where,
    with which token, and how long each kind of call may take before it is a
    fault (the store's index goes out of service with INDEX_UNAVAILABLE; the
    caller is never held longer)."""

    # A file path (under data_dir) runs embedded Milvus Lite; http(s)://host:19530 a server.
    milvus_uri: str = "milvus.db"
    # A file holding the Milvus token (user:password or an API key); None: none sent.
    milvus_token_file: Path | None = None
    # The PEM of the CA that signed the server's TLS certificate (the channel is then
    # TLS whatever the URI's scheme); None: an https:// URI is checked against the
    # system's CA roots, an http:// one is plain.
    milvus_ca_file: Path | None = None
    # A search, count, insert or delete slower than this is a fault. Measured at 1M:
    # every p99 at most 0.73 s; a write's read-back waits one time tick (about 0.2 s).
    milvus_timeout_seconds: float = Field(default=2.0, gt=0)
    # The checks against the store (the ids with Strong consistency, each call
    # waiting for the server's next time tick), per call.
    milvus_check_timeout_seconds: float = Field(default=10.0, gt=0)
    # Loading, flushing and refilling a collection from the store (minutes at millions).
    milvus_bulk_timeout_seconds: float = Field(default=1800.0, gt=0)

    def milvus_address(self, data_dir: Path) -> str:
        """The URI as pymilvus takes it: a server URI as is, a Lite file under data_dir."""
        if "://" in self.milvus_uri:
            return self.milvus_uri
        return str(data_dir / self.milvus_uri)

    def milvus_ca(self) -> str:
        """The CA file's path as pymilvus takes it; empty for the system's roots."""
        return str(self.milvus_ca_file) if self.milvus_ca_file else ""

    def milvus_token(self) -> str:
        """The token file's content; empty when none is configured."""
        return self.milvus_token_file.read_text().strip() if self.milvus_token_file else ""


class WatchlistSettings(MilvusClientSettings):
    """The watch-list store, its search index and the identification operating point."""

    enabled: bool = True
    # Relative paths are under ``Settings.data_dir``.
    store_path: Path = Path("watchlist") / "store.sqlite3"
    # The FAISS index saved at shutdown, tagged with the store's change
    # sequence; None: always rebuild from the store at start.
    snapshot_path: Path | None = Path("watchlist") / "index.snapshot"
    # Where each watch-list's templates are searched: "faiss" (exact, in this
    # process's memory, saved to snapshot_path at shutdown) or "milvus" (a FLAT,
    # so exact, collection per list at milvus_uri: a file path runs embedded
    # Milvus Lite, a URI a server; refilled from the store at every load, no
    # snapshot). Both answer the same search: the store decides what is in it.
    index: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str = "watchlist/milvus.db"
    # Each list's collection is this prefix, "_", and a digest of the list's name.
    milvus_collection_prefix: str = Field(default="watchlist", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,150}$")
    # How long a write waits on another connection's lock before failing.
    busy_timeout_seconds: float = Field(default=5.0, gt=0)
    default_top_k: int = Field(default=10, ge=1)
    max_top_k: int = Field(default=100, ge=1)
    # Photos per person raise hit rates; 256 is the most a template key can hold.
    max_templates_per_subject: int = Field(default=16, ge=1, le=256)
    # The false-positive identification rate searches are decided at: the 1:N
    # rows of the pack's calibration table give the threshold for it at the
    # size of the gallery searched (the nearest row at or below it: never laxer).
    target_fpir: float = Field(default=0.01, gt=0.0, lt=1.0, allow_inf_nan=False)
    # Fallback only, for a pack whose calibration table has no 1:N rows: the
    # cosine score a candidate must reach, and the FPIR it stood for when
    # measured for fast-legacy's MobileFaceNet (`python -m benchmarks.identification`:
    # LFW dev, 774 people enrolled, 13 of 1,312 searches for people not
    # enrolled returned a candidate). Every shipped pack's table has 1:N rows;
    # a score scale is the model's own, so another pack needs its own value.
    threshold: float = Field(default=0.601, ge=-1.0, le=1.0, allow_inf_nan=False)
    threshold_fpir: float = Field(default=0.01, gt=0.0, le=1.0, allow_inf_nan=False)
    # Most watch-lists one store may hold: CreateWatchlist beyond it is refused
    # TOO_MANY_WATCHLISTS. Agencies keep a few dozen; the cap stops a careless or
    # hostile admin from filling the store (11,000 lists once broke listing).
    max_watchlists: int = Field(default=1000, ge=1)
    # ListWatchlists pages: the default and the most one page holds. A list is
    # at most about 1.2 KiB on the wire (a 128-byte name, a 1 KiB description,
    # counts), so 500 stay near 0.6 MiB, under gRPC's default 4 MiB client limit.
    list_page_size: int = Field(default=100, ge=1)
    max_list_page_size: int = Field(default=500, ge=1, le=2000)
    # While the store is missing or failing, how often to try to reopen it and
    # rebuild the index (the watch-lists stay out of service until it works).
    store_retry_seconds: float = Field(default=5.0, gt=0)
    # While serving, how often the store is checked to still be the file it
    # opened (not removed, moved or replaced; its store id unchanged): a store
    # gone from under the server takes the watch-lists out (STORE_MISSING)
    # within this time. Every write and read also checks, by stat.
    store_watch_seconds: float = Field(default=1.0, gt=0, le=60)
    # Quarantined templates named one by one in the log at load; the rest are counted.
    quarantine_log_limit: int = Field(default=50, ge=0)
    # Where `watchlist init` remembers each store it made (id and path), outside
    # the store's folder so that losing the folder leaves the memory: init then
    # refuses to make an empty store in its place. Relative: under data_dir.
    markers_path: Path = Path(".stores")

    def store_file(self, data_dir: Path) -> Path:
        return data_dir / self.store_path

    def markers_folder(self, data_dir: Path) -> Path:
        return data_dir / self.markers_path

    def snapshot_file(self, data_dir: Path) -> Path | None:
        return None if self.snapshot_path is None else data_dir / self.snapshot_path


class ReplicationSettings(BaseModel):
    """The change feed, replicas, fencing and synchronous mode (README: replication)."""

    # host:port of the primary this server follows as a read-only replica
    # (`verifier serve --replica-of ADDR`); None: this server is a primary.
    replica_of: str | None = None
    # The client certificate a replica shows its primary (role replica): <stem>.pem
    # and <stem>.key in security.tls_dir, checked against its ca.pem.
    client_stem: str = "replica"
    # The name the primary's certificate must carry; None: the host of replica_of.
    primary_server_name: str | None = None
    # A primary sends a heartbeat this often on an idle feed: a replica's data
    # age is known to within it.
    heartbeat_seconds: float = Field(default=0.5, gt=0, le=60)
    # A follower that hears nothing (no change, no heartbeat) for this long
    # drops the connection and reconnects.
    silence_seconds: float = Field(default=3.0, gt=0)
    # Wait before reconnecting to an unreachable primary (doubles up to the maximum).
    reconnect_seconds: float = Field(default=0.2, gt=0)
    max_reconnect_seconds: float = Field(default=5.0, gt=0)
    # Changes read from the store per step of the feed.
    batch: int = Field(default=256, ge=1)
    snapshot_chunk_bytes: int = Field(default=1024 * 1024, ge=4096, le=8 * 1024 * 1024)
    # Acknowledge a change to its writer only once at least one replica holds it
    # durably; a change no replica confirms within sync_timeout_seconds is
    # answered UNAVAILABLE (committed here, its replication unconfirmed).
    synchronous: bool = False
    sync_timeout_seconds: float = Field(default=2.0, gt=0)


class BundleSettings(BaseModel):
    """Signed partner bundles (`verifier bundle ...`)."""

    # Public keys of the partners whose bundles are accepted, one PEM file each,
    # named <issuing agency>.pub or <issuing agency>.<anything>.pub: a key
    # vouches for bundles of that agency only. None: every bundle is refused.
    trusted_keys_dir: Path | None = None
    # A bundle larger than this is refused unread.
    max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)


class ScoreTail(BaseModel):
    """Non-mated scores' tail: P(S >= t) = exceedance * exp(-(t - anchor) / scale) above anchor."""

    anchor: float = Field(ge=-1.0, le=1.0, allow_inf_nan=False)
    exceedance: float = Field(gt=0.0, le=1.0)
    scale: float = Field(gt=0.0, allow_inf_nan=False)


class RegistrySettings(MilvusClientSettings):
    """The traveller registry (Registry service): registration, verification by
    traveller id, duplicate search over every registered traveller, erasure and
    retention. Its tables live in the watch-list store's file (one change feed)."""

    # Off: the Registry service is not served. On: the server refuses to start
    # without the document key (never a default key).
    enabled: bool = False
    # HMAC-SHA256 key for document numbers (stored only as this keyed hash);
    # relative paths are under ``Settings.data_dir``. `verifier registry init`
    # writes a random one for development; production brings its own.
    document_key_path: Path = Path("registry") / "document.key"
    # The duplicate search's index: "faiss_exact" (every template scored),
    # "faiss_ivf" (approximate, exact until ivf_min_train templates) or
    # "milvus" (milvus_uri: a file path runs embedded Milvus Lite, an
    # http(s):// URI a Milvus standalone or cluster).
    index: Literal["faiss_exact", "faiss_ivf", "milvus"] = "faiss_ivf"
    # The FAISS index saved at shutdown (relative to data_dir); None: rebuilt at start.
    snapshot_path: Path | None = Path("registry") / "index.snapshot"
    # The single-face rule before the calibrated decision (benchmarks compare with it).
    duplicate_threshold: float = Field(default=0.60, ge=-1.0, le=1.0, allow_inf_nan=False)
    # The duplicate decision (verifier.registry.duplicates): targets per newcomer's
    # registration, whence the thresholds at the registry's size. Refused as a
    # certain DUPLICATE_IDENTITY by mistake; sent to an officer (DUPLICATE_SUSPECTED;
    # at least as often: the officers' load, traded against duplicates missed).
    duplicate_certain_rate: float = Field(default=1e-4, gt=0.0, lt=1.0)
    duplicate_refer_rate: float = Field(default=1e-2, gt=0.0, lt=1.0)
    # Tails of the lower (both) and higher (either) face's non-mated score against
    # one traveller: `python -m benchmarks.duplicates --fit` on LFW dev, this model.
    duplicate_tail_both: ScoreTail = ScoreTail(anchor=0.3464, exceedance=0.001, scale=0.0230)
    duplicate_tail_either: ScoreTail = ScoreTail(anchor=0.4005, exceedance=0.001, scale=0.0228)
    # Templates the duplicate search asks the index for (then scored exactly).
    search_depth: int = Field(default=10, ge=1, le=1000)
    # IVF: clusters probed per search. A list not probed is a duplicate missed:
    # 2048 agreed with exact search at the duplicate threshold for 100 % of
    # queries at 1M (p99 23.7 ms) and 99.90 % at 10M (p99 46.9 ms); 64 for 94 %
    # and 90 % (README: registry benchmark). Set it from a run at your size.
    ivf_nprobe: int = Field(default=2048, ge=1)
    ivf_min_train: int = Field(default=50_000, ge=1000)
    # Retrain (rebuild in the background) when the registry has grown this many times.
    ivf_retrain_growth: float = Field(default=4.0, gt=1.0)
    milvus_uri: str = "registry/milvus.db"
    milvus_collection: str = "registry"
    # The index the collection is created with: "FLAT" (exact), "HNSW" (graph:
    # milvus_hnsw_m links a node, milvus_hnsw_ef_construction candidates while
    # building, milvus_search_ef while searching) or "IVF_FLAT" (lists:
    # milvus_ivf_nlist built, milvus_search_nprobe probed). An existing
    # collection keeps the index it was created with. README: registry, Milvus
    # server at 1M (agreement with exact search and p99 per setting).
    milvus_index_type: Literal["FLAT", "IVF_FLAT", "HNSW"] = "FLAT"
    milvus_hnsw_m: int = Field(default=16, ge=4, le=64)
    milvus_hnsw_ef_construction: int = Field(default=200, ge=8, le=4096)
    milvus_search_ef: int = Field(default=256, ge=1, le=32768)
    milvus_ivf_nlist: int = Field(default=1024, ge=1, le=65536)
    milvus_search_nprobe: int = Field(default=64, ge=1, le=65536)
    # How often the serving registry checks the collection against the store
    # (count and ids, Strong consistency) and rebuilds it when they differ;
    # and how often, while out of service, it tries Milvus again.
    milvus_check_seconds: float = Field(default=60.0, gt=0)
    milvus_retry_seconds: float = Field(default=2.0, gt=0)
    # Records unused (not registered, updated or verified) for this long are
    # erased by the retention sweep, every retention_sweep_seconds, at most
    # sweep_batch per round.
    retention_days: float = Field(default=3 * 365.0, gt=0)
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)
    sweep_batch: int = Field(default=1000, ge=1)
    # Verifications' "last used" times are written together, one change every
    # this many seconds (and before a sweep, and at shutdown), not one write
    # and one feed change per verification. A crash loses at most this much
    # of them: a record's retention then counts from a slightly earlier use.
    last_used_flush_seconds: float = Field(default=30.0, gt=0)

    def key_file(self, data_dir: Path) -> Path:
        return data_dir / self.document_key_path

    def snapshot_file(self, data_dir: Path) -> Path | None:
        return None if self.snapshot_path is None else data_dir / self.snapshot_path

    def milvus_index_params(self) -> tuple[dict[str, int], dict[str, int]]:
        """(build, search) parameters of ``milvus_index_type``."""
        if self.milvus_index_type == "HNSW":
            return ({"M": self.milvus_hnsw_m, "efConstruction": self.milvus_hnsw_ef_construction},
                    {"ef": self.milvus_search_ef})
        if self.milvus_index_type == "IVF_FLAT":
            return {"nlist": self.milvus_ivf_nlist}, {"nprobe": self.milvus_search_nprobe}
        return {}, {}
