"""The traveller registry on a replica, with real photos over real gRPC on
loopback: a replica started empty gets the registry with its snapshot, verifies
a registered traveller locally (writing nothing of its own: a local "last
used" change once took the sequence number of the primary's erasure, which the
replica then skipped, keeping the erased traveller), refuses registration
before any face work, and follows an erasure made on the primary."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.gate.test_cli import _wait_for_watchlists
from tests.registry.test_registry_api import _refusal, _register, _settings
from verifier.app import RunningServer, build_service, start_server
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.registry.service import write_key
from verifier.v1 import registry_pb2 as rg
from verifier.v1 import registry_pb2_grpc as rg_grpc
from verifier.v1 import verifier_pb2 as vpb
from verifier.watchlist.service import initialise_store

WAIT_S = 30.0


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _serving(local: Settings, engine: FaceEngine) -> RunningServer:
    server = start_server(local, build_service(local, engine))
    _wait_for_watchlists(f"127.0.0.1:{server.port}")
    _until(lambda: server.registry is not None and server.registry.ready, "the registry index")
    return server


@pytest.fixture()
def pair(settings: Settings, engine: FaceEngine, tmp_path: Path) -> Iterator[tuple[RunningServer, Settings]]:
    """A primary with the registry, and the settings of an empty replica of it
    holding the same document key (the operator copies it with the TLS files)."""
    primary_settings = _settings(settings, tmp_path / "primary")
    initialise_store(primary_settings)
    key = primary_settings.registry.key_file(primary_settings.data_dir)
    write_key(key)
    primary = _serving(primary_settings, engine)
    replica_settings = _settings(settings, tmp_path / "replica")
    replica_settings.replication.replica_of = f"127.0.0.1:{primary.port}"
    replica_key = replica_settings.registry.key_file(replica_settings.data_dir)
    replica_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(key, replica_key)
    try:
        yield primary, replica_settings
    finally:
        primary.stop(grace=1.0)


def test_a_replica_verifies_travellers_refuses_registration_and_follows_erasure(
    pair: tuple[RunningServer, Settings], engine: FaceEngine, photos: dict[str, Path],
) -> None:
    primary, replica_settings = pair
    obama, obama2, obama3 = (photos[n].read_bytes() for n in ("obama.jpg", "obama2.jpg", "obama3.jpg"))
    with grpc.insecure_channel(f"127.0.0.1:{primary.port}") as to_primary:
        on_primary = rg_grpc.RegistryStub(to_primary)
        _register(on_primary, "t-1", "P<123 456", obama, obama2)
        replica = _serving(replica_settings, engine)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{replica.port}") as to_replica:
                on_replica = rg_grpc.RegistryStub(to_replica)
                checked = on_replica.VerifyTraveller(
                    rg.VerifyTravellerRequest(traveller_id="t-1", live_capture=vpb.Image(data=obama3)), timeout=60)
                assert checked.match and checked.score >= checked.threshold

                code, meta = _refusal(lambda: _register(on_replica, "t-2", "X999", photos["biden.jpg"].read_bytes(),
                                                        photos["biden.jpg"].read_bytes()))
                assert code is grpc.StatusCode.FAILED_PRECONDITION
                assert meta["verifier-reason"] == "READ_ONLY_REPLICA"

                # A use on the primary reaches the replica with the next flush of uses.
                used_before = replica.registry.store.traveller("t-1").last_used_at  # type: ignore[union-attr]
                assert on_primary.VerifyTraveller(rg.VerifyTravellerRequest(
                    traveller_id="t-1", live_capture=vpb.Image(data=obama3)), timeout=60).match
                assert primary.registry.flush_uses() == 1  # type: ignore[union-attr]
                _until(lambda: replica.registry.store.traveller("t-1").last_used_at > used_before,  # type: ignore
                       "the use to reach the replica")

                on_primary.EraseTraveller(rg.EraseTravellerRequest(traveller_id="t-1"), timeout=10)

                def erased_here() -> bool:
                    try:
                        on_replica.GetTraveller(rg.GetTravellerRequest(traveller_id="t-1"), timeout=10)
                    except grpc.RpcError as error:
                        return error.code() is grpc.StatusCode.NOT_FOUND
                    return False

                _until(erased_here, "the erasure to reach the replica")
                code, meta = _refusal(lambda: on_replica.VerifyTraveller(
                    rg.VerifyTravellerRequest(traveller_id="t-1", live_capture=vpb.Image(data=obama3)), timeout=60))
                assert code is grpc.StatusCode.NOT_FOUND and meta["verifier-reason"] == "SUBJECT_NOT_FOUND"
        finally:
            replica.stop(grace=1.0)
