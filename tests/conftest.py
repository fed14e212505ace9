"""Shared fixtures: real settings, the real model pack, real photos, a real server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from verifier.config import Settings, get_settings
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest
from verifier.pipeline import FaceEngine
from verifier.templates import TemplateSpec
from verifier.watchlist.service import initialise_store

if TYPE_CHECKING:
    from verifier.vectors.milvus_server import LocalMilvus

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LFW_DEV = SHARED_DATA / "lfw-dev"
SMOKE = SHARED_DATA / "smoke"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> FaceEngine:
    return FaceEngine.from_settings(settings)


def with_pack(settings: Settings, pack: str) -> Settings:
    """A copy of ``settings`` serving another model pack."""
    local = settings.model_copy(deep=True)
    local.models.pack = pack
    return local


@pytest.fixture(scope="session")
def legacy_engine(settings: Settings) -> FaceEngine:
    """The fast-legacy pack: a separate landmark model, and a PAD (liveness) model."""
    return FaceEngine.from_settings(with_pack(settings, "fast-legacy"))


@pytest.fixture(scope="session")
def template_spec(settings: Settings) -> TemplateSpec:
    """The model id and dimension of the served pack's templates, read from the manifest."""
    return load_manifest(settings.models.manifest).template_spec(settings.models.pack)


@pytest.fixture(scope="session")
def photos(settings: Settings) -> dict[str, Path]:
    """Real photos shipped in the face_recognition 1.3.0 sdist: obama.jpg, obama2.jpg,
    obama3.jpg (one person), biden.jpg (another) and 32bit.png (RGBA)."""
    manifest = load_manifest(settings.models.manifest)
    return fetch_asset(manifest.assets["face-recognition-photos"], settings.models.cache_dir)


@pytest.fixture(scope="session")
def large_photo(photos: dict[str, Path]) -> bytes:
    """obama.jpg as the costliest live frame the service accepts (a 4096x3072
    WEBP): several times a gate frame's work."""
    from benchmarks.samples import max_cost_live_frame

    return max_cost_live_frame(photos["obama.jpg"].read_bytes())


@pytest.fixture(scope="session")
def large_chip(photos: dict[str, Path]) -> bytes:
    """obama2.jpg as the costliest chip photo the service accepts (a 4 Mpixel JPEG 2000)."""
    from benchmarks.samples import max_cost_chip

    return max_cost_chip(photos["obama2.jpg"].read_bytes())


@pytest.fixture(scope="session")
def lfw_dev() -> Path:
    if not (LFW_DEV / "pairs.txt").exists():
        pytest.skip(f"LFW dev half not found at {LFW_DEV} (shared data is absent on a fresh machine)")
    return LFW_DEV


@pytest.fixture(scope="session")
def smoke() -> Path:
    if not SMOKE.exists():
        pytest.skip(f"smoke photos not found at {SMOKE} (shared data is absent on a fresh machine)")
    return SMOKE


@contextmanager
def loopback_server(settings: Settings, engine: FaceEngine, data_dir: Path, watchlist: bool) -> Iterator[str]:
    """A server on a free loopback port sharing the session's engine, its data
    (audit trail, and with ``watchlist`` the watch-list store) in ``data_dir``."""
    from verifier.app import build_service, start_server

    local = settings.model_copy(deep=True)
    local.server.host = "127.0.0.1"
    local.server.port = 0
    local.watchlist.enabled = watchlist
    local.data_dir = data_dir
    if watchlist:
        initialise_store(local)
    running = start_server(local, build_service(local, engine))
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(grace=1.0)


@pytest.fixture(scope="session")
def server_address(
    settings: Settings, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real gRPC server on a free loopback port, sharing the session's engine."""
    with loopback_server(settings, engine, tmp_path_factory.mktemp("server"), watchlist=False) as address:
        yield address


@pytest.fixture(scope="session")
def channel(server_address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server_address) as chan:
        grpc.channel_ready_future(chan).result(timeout=10)
        yield chan


@pytest.fixture(scope="session")
def watchlist_server_address(
    settings: Settings, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real gRPC server with the Watchlist service, its store in a fresh data directory."""
    with loopback_server(settings, engine, tmp_path_factory.mktemp("watchlist-server"), watchlist=True) as address:
        yield address


@pytest.fixture(scope="session")
def watchlist_channel(watchlist_server_address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(watchlist_server_address) as chan:
        grpc.channel_ready_future(chan).result(timeout=10)
        yield chan


@contextmanager
def local_milvus(base_dir: Path, overrides: dict[str, str] | None = None) -> Iterator["LocalMilvus"]:
    """A real Milvus standalone server (the ``milvus`` package's binary, its own
    process) on a free 127.0.0.1 port with its data in ``base_dir`` (and
    ``overrides`` of its milvus.yaml, by dotted key); skipped with
    the reason where it cannot start, always stopped (its process killed by pid
    at worst, and by the kernel should this process be killed first)."""
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install '.[milvus]')")
    from verifier.vectors.milvus_server import LocalMilvus, MilvusUnavailable

    server = LocalMilvus(base_dir, overrides=overrides)
    try:
        try:
            server.start()
        except MilvusUnavailable as error:
            pytest.skip(f"no Milvus server here: {error}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["LocalMilvus"]:
    """One Milvus server for the session's backend suites (not stopped by any test:
    the fault tests start their own)."""
    with local_milvus(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator["LocalMilvus"]:
    """A Milvus server of the requesting module's own: its tests may stop, freeze and restart it."""
    with local_milvus(tmp_path_factory.mktemp("milvus-own")) as server:
        yield server
