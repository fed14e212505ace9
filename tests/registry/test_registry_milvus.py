"""The Registry on a real Milvus standalone server (its own process, gRPC over a
loopback socket), served over a real socket with real photos: duplicates found
under concurrent registrations, and the faults: the server stopped and started
again, frozen, and its collection drifted from the store. Failing closed
throughout: a fault is a refusal with INDEX_UNAVAILABLE and health NOT_SERVING,
never a registration accepted without its duplicate search."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.gate.test_cli import _wait_for_watchlists
from tests.registry.test_registry_api import _refusal, _register, _settings
from tests.registry.test_registry_api import stub  # noqa: F401 - the fixture, over this module's server
from verifier.app import RunningServer, build_service, start_server
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.registry.service import RegistryService, write_key
from verifier.v1 import registry_pb2 as rg
from verifier.v1 import registry_pb2_grpc as rg_grpc
from verifier.vectors.milvus_server import LocalMilvus
from verifier.watchlist.service import initialise_store

REGISTRY = rg.DESCRIPTOR.services_by_name["Registry"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Long enough for a restarted server (a few seconds here) and a reload from the store.
RECOVERY_S = 90.0


@pytest.fixture(scope="module")
def running(settings: Settings, engine: FaceEngine, milvus: LocalMilvus,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    local = _settings(settings, tmp_path_factory.mktemp("registry-milvus"))
    config = local.registry
    config.index, config.milvus_uri, config.milvus_collection = "milvus", milvus.uri, "registry_faults"
    config.milvus_index_type, config.milvus_hnsw_m, config.milvus_hnsw_ef_construction = "HNSW", 8, 64
    config.milvus_search_ef = 64
    # Faults found fast: a call slower than a second is one; the collection checked every second.
    config.milvus_timeout_seconds, config.milvus_check_seconds, config.milvus_retry_seconds = 1.0, 1.0, 0.5
    config.milvus_check_timeout_seconds = 5.0
    initialise_store(local)
    write_key(config.key_file(local.data_dir))
    server = start_server(local, build_service(local, engine))
    _wait_for_watchlists(f"127.0.0.1:{server.port}")
    try:
        _until(lambda: server.registry.ready, "the registry never loaded its Milvus collection")  # type: ignore[union-attr]
        yield server
    finally:
        server.stop(grace=1.0)


def _until(condition: Callable[[], bool], failure: str, within: float = RECOVERY_S) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


def _health(running: RunningServer) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=REGISTRY),
                                                          timeout=5).status


def _registry(running: RunningServer) -> RegistryService:
    assert running.registry is not None
    return running.registry


def _obama(photos: dict[str, Path]) -> tuple[bytes, bytes, bytes]:
    return tuple(photos[n].read_bytes() for n in ("obama.jpg", "obama2.jpg", "obama3.jpg"))  # type: ignore[return-value]


def _held_and_stored(registry: RegistryService) -> tuple[list[int], list[int]]:
    index = registry._index
    assert index is not None
    return index.ids().tolist(), registry._store_ids().tolist()


def test_concurrent_registrations_of_one_face_register_it_once(running: RunningServer, stub: rg_grpc.RegistryStub,
                                                               photos: dict[str, Path]) -> None:
    """Each registration's search runs after the previous one was acknowledged:
    with Session searches and writes read back, the acknowledged face is found."""
    chip, live, _ = _obama(photos)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        try:
            _register(stub, f"race-{n}", f"D{n}", chip, live)
            outcomes.append("registered")
        except grpc.RpcError as error:
            outcomes.append(dict(error.trailing_metadata() or ()).get("verifier-reason", str(error.code())))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["DUPLICATE_IDENTITY"] * 3 + ["registered"], outcomes
    held, stored = _held_and_stored(_registry(running))
    assert held == stored and len(held) == 2


def test_a_stopped_milvus_takes_the_registry_out_of_service_until_it_returns(
        running: RunningServer, stub: rg_grpc.RegistryStub, milvus: LocalMilvus, photos: dict[str, Path]) -> None:
    chip, _, third = _obama(photos)
    registry = _registry(running)
    travellers = registry.store.count()
    milvus.stop()
    _until(lambda: _health(running) == NOT_SERVING, "health still SERVING with Milvus stopped")
    assert registry.availability.reason is not None and registry.availability.reason.value == "INDEX_UNAVAILABLE"
    code, meta = _refusal(lambda: _register(stub, "while-down", "W1", chip, third))
    assert code is grpc.StatusCode.UNAVAILABLE and meta["verifier-reason"] == "INDEX_UNAVAILABLE"
    assert registry.store.count() == travellers  # refused before the store was written

    milvus.start()
    _until(lambda: _health(running) == SERVING, "the registry did not come back with Milvus")
    assert registry.availability.serving
    code, meta = _refusal(lambda: _register(stub, "after-restart", "A1", chip, third))
    assert meta["verifier-reason"] == "DUPLICATE_IDENTITY"  # the collection survived the restart and is searched


def test_a_frozen_milvus_is_a_fault_not_a_wait(running: RunningServer, stub: rg_grpc.RegistryStub,
                                               milvus: LocalMilvus, photos: dict[str, Path]) -> None:
    chip, _, third = _obama(photos)
    milvus.pause()
    try:
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            _register(stub, "while-frozen", "F1", chip, third)
        reason = dict(raised.value.trailing_metadata() or ()).get("verifier-reason")
        assert (raised.value.code(), reason) == (grpc.StatusCode.UNAVAILABLE, "INDEX_UNAVAILABLE"), \
            raised.value.details()
        assert time.monotonic() - began < 30  # the face work and one bounded search, not a hang
        assert _health(running) == NOT_SERVING
    finally:
        milvus.resume()
    _until(lambda: _health(running) == SERVING, "the registry did not come back once Milvus answered")


def test_a_collection_that_drifted_from_the_store_is_rebuilt_from_it(
        running: RunningServer, stub: rg_grpc.RegistryStub, milvus: LocalMilvus, photos: dict[str, Path],
        caplog: pytest.LogCaptureFixture) -> None:
    from pymilvus import MilvusClient

    registry = _registry(running)
    held, stored = _held_and_stored(registry)
    assert held == stored and held, "the tests above register a traveller first"
    other = MilvusClient(uri=milvus.uri)  # someone else's hands on the collection
    try:
        other.delete("registry_faults", ids=held[:1], timeout=10)
        stray = np.random.default_rng(5).standard_normal(registry.dimension).astype(np.float32)
        other.insert("registry_faults", [{"id": 999_999 << 8, "vector": (stray / np.linalg.norm(stray)).tolist()}],
                     timeout=10)
    finally:
        other.close()
    with caplog.at_level(logging.WARNING, logger="verifier.registry.service"):
        _until(lambda: any("drifted from the store: 1 templates missing, 1 extra" in r.getMessage()
                           for r in caplog.records), "the drift was never detected")
        _until(lambda: registry.ready, "the collection was never rebuilt")
    held, stored = _held_and_stored(registry)
    assert held == stored
    chip, _, third = _obama(photos)
    code, meta = _refusal(lambda: _register(stub, "after-drift", "R1", chip, third))
    assert meta["verifier-reason"] == "DUPLICATE_IDENTITY"
