"""The Registry over a real socket with real photos: register, verify, duplicates, refusals, erasure, retention."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.gate.test_cli import _wait_for_watchlists
from tests.gate.test_screen_api import mirrored_and_turned
from verifier.app import RunningServer, build_service, start_server
from verifier.config import Settings
from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.registry.service import RegistryKeyMissing, write_key
from verifier.security.audit import RecordFilter, read_records
from verifier.templates import Template
from verifier.v1 import registry_pb2 as rg
from verifier.v1 import registry_pb2_grpc as rg_grpc
from verifier.v1 import verifier_pb2 as vpb
from verifier.watchlist.service import initialise_store
from verifier.registry.store import TOUCH_TRAVELLER


def _settings(settings: Settings, data_dir: Path) -> Settings:
    local = settings.model_copy(deep=True)
    local.server.host, local.server.port, local.data_dir = "127.0.0.1", 0, data_dir
    local.registry.enabled = True
    local.registry.index = "faiss_exact"
    return local


@pytest.fixture(scope="module")
def running(settings: Settings, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    local = _settings(settings, tmp_path_factory.mktemp("registry"))
    initialise_store(local)
    write_key(local.registry.key_file(local.data_dir))
    server = start_server(local, build_service(local, engine))
    _wait_for_watchlists(f"127.0.0.1:{server.port}")
    deadline = time.monotonic() + 30
    while not server.registry.ready and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.stop(grace=1.0)


@pytest.fixture(scope="module")
def stub(running: RunningServer) -> Iterator[rg_grpc.RegistryStub]:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield rg_grpc.RegistryStub(channel)


def _register(stub: rg_grpc.RegistryStub, traveller: str, document: str, chip: bytes, live: bytes) -> rg.RegisterResponse:
    return stub.Register(rg.RegisterRequest(
        traveller_id=traveller, document_number=document, chip_photo=vpb.Image(data=chip),
        live_capture=vpb.Image(data=live), consent=rg.Consent(gate_id="gate-3", text_version="v2")), timeout=60)


def _refusal(call) -> tuple[grpc.StatusCode, dict[str, str]]:  # noqa: ANN001 - a zero-argument call
    """The status code and the reason with the ErrorInfo details of a refused call."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    trailers = dict(raised.value.trailing_metadata() or ())
    info = error_details_pb2.ErrorInfo()
    status_pb2.Status.FromString(trailers["grpc-status-details-bin"]).details[0].Unpack(info)
    return raised.value.code(), {"verifier-reason": trailers["verifier-reason"], **info.metadata}


def _files(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(data_dir.rglob("*")) if path.is_file()
                    and not path.name.endswith(".lock"))


def test_registration_verification_duplicates_and_erasure(running: RunningServer, stub: rg_grpc.RegistryStub,
                                                          photos: dict[str, Path]) -> None:
    obama, obama2, obama3 = (photos[n].read_bytes() for n in ("obama.jpg", "obama2.jpg", "obama3.jpg"))
    done = _register(stub, "t-1", "P<123 456", obama, obama2)
    assert done.traveller.traveller_id == "t-1" and done.score >= done.threshold
    assert done.traveller.consent.gate_id == "gate-3" and not done.traveller.templates

    checked = stub.VerifyTraveller(rg.VerifyTravellerRequest(traveller_id="t-1", live_capture=vpb.Image(data=obama3)),
                                   timeout=60)
    assert checked.match and checked.score >= checked.threshold

    code, meta = _refusal(lambda: _register(stub, "t-2", "X999", obama, obama3))
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert meta["verifier-reason"] == "DUPLICATE_IDENTITY" and meta["other_traveller_id"] == "t-1"
    assert meta["found_by"] == "face"

    # Registered under its id: the document number itself is nowhere on disk.
    data_dir = running.registry.settings.data_dir  # type: ignore[union-attr]
    assert b"123456" not in _files(data_dir)

    record = stub.GetTraveller(rg.GetTravellerRequest(traveller_id="t-1"), timeout=10).traveller
    vectors = [t.vector for t in record.templates]
    assert len(vectors) == 2
    on_disk = _files(data_dir)
    assert all(v in on_disk or base64.b64encode(v) in on_disk for v in vectors)  # the check can fail

    assert stub.EraseTraveller(rg.EraseTravellerRequest(traveller_id="t-1"), timeout=10).traveller_id == "t-1"
    code, meta = _refusal(lambda: stub.VerifyTraveller(
        rg.VerifyTravellerRequest(traveller_id="t-1", live_capture=vpb.Image(data=obama3)), timeout=60))
    assert code is grpc.StatusCode.NOT_FOUND and meta["verifier-reason"] == "SUBJECT_NOT_FOUND"
    running.registry.close()  # type: ignore[union-attr]  # writes the index snapshot, as at shutdown
    assert running.registry.snapshot.exists()  # type: ignore[union-attr]
    on_disk = _files(data_dir)
    for vector in vectors:
        assert vector not in on_disk and base64.b64encode(vector) not in on_disk
        assert vector[:64] not in on_disk  # not even a fragment of it
    running.registry.load()  # type: ignore[union-attr]


def test_verifications_are_written_as_one_use_change_per_flush(
    running: RunningServer, stub: rg_grpc.RegistryStub, photos: dict[str, Path]
) -> None:
    """A matching VerifyTraveller writes nothing at once; the flush writes every
    traveller's last use in one change on the feed, and moves it only forward."""
    registry = running.registry
    assert registry is not None
    obama, obama2, obama3 = (photos[n].read_bytes() for n in ("obama.jpg", "obama2.jpg", "obama3.jpg"))
    _register(stub, "t-uses", "U-1", obama, obama2)
    before = registry.store.traveller("t-uses").last_used_at
    seq = registry.store.store.last_seq
    for _ in range(3):
        assert stub.VerifyTraveller(rg.VerifyTravellerRequest(
            traveller_id="t-uses", live_capture=vpb.Image(data=obama3)), timeout=60).match
    assert registry.store.store.last_seq == seq and registry.store.traveller("t-uses").last_used_at == before
    assert registry.flush_uses() == 1
    (change,) = registry.store.store.changes_since(seq, 10)
    assert change.kind == TOUCH_TRAVELLER and json.loads(change.payload)["uses"][0][0] == registry.store.traveller("t-uses").row
    assert registry.store.traveller("t-uses").last_used_at > before
    assert registry.flush_uses() == 0  # nothing gathered since
    stub.EraseTraveller(rg.EraseTravellerRequest(traveller_id="t-uses"), timeout=10)


def test_a_live_capture_of_another_person_is_refused(stub: rg_grpc.RegistryStub, photos: dict[str, Path]) -> None:
    code, meta = _refusal(lambda: _register(stub, "t-4", "D1", photos["biden.jpg"].read_bytes(),
                                            photos["obama2.jpg"].read_bytes()))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert meta["verifier-reason"] == "REGISTRATION_REFUSED" and "NO_MATCH" in meta["causes"].split(",")


@pytest.mark.parametrize("change", ["identical", "mirrored", "mirrored and turned 20 deg"])
def test_a_replayed_chip_photo_registers_no_one(stub: rg_grpc.RegistryStub, photos: dict[str, Path],
                                                change: str) -> None:
    chip = photos["obama.jpg"].read_bytes()
    bgr = cv2.imread(str(photos["obama.jpg"]), cv2.IMREAD_COLOR)
    live = {"identical": chip, "mirrored": cv2.flip(bgr, 1),
            "mirrored and turned 20 deg": mirrored_and_turned(bgr, 20.0)}[change]
    if not isinstance(live, bytes):
        live = cv2.imencode(".jpg", live, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    code, meta = _refusal(lambda: _register(stub, "t-5", "D2", chip, live))
    assert meta["verifier-reason"] == "REGISTRATION_REFUSED" and "LIVE_IS_DOCUMENT_PHOTO" in meta["causes"]


def _unit(model: str, seed: int, dimension: int) -> Template:
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return Template(model, vector / np.linalg.norm(vector))


def test_retention_sweep_erases_only_expired_records(running: RunningServer) -> None:
    registry = running.registry
    assert registry is not None
    model, dimension = registry.model_id, registry.dimension
    old = [_unit(model, seed, dimension) for seed in (1, 2)]
    registry.store.register("old-1", "hash-old", time.time(), "gate-1", "v1", old)
    with pytest.raises(VerifierError) as taken:  # one document, two travellers
        registry.store.register("other", "hash-old", time.time(), "gate-1", "v1", old)
    assert taken.value.reason is Reason.DUPLICATE_IDENTITY and taken.value.details["other_traveller_id"] == "old-1"
    time.sleep(0.05)
    cutoff = time.time()
    time.sleep(0.05)
    registry.store.register("new-1", "hash-new", time.time(), "gate-1", "v1",
                            [_unit(model, seed, dimension) for seed in (3, 4)])
    later = cutoff + registry.config.retention_days * 86400.0
    assert registry.sweep(later) == ["old-1"]
    assert registry.store.traveller("new-1").traveller_id == "new-1"
    with pytest.raises(Exception, match="no registered traveller"):
        registry.store.traveller("old-1")
    assert running.edge is not None and running.edge.audit is not None
    running.edge.audit.flush()
    swept = [r for r in read_records(running.edge.audit.path, RecordFilter(subject="traveller:old-1"))]
    assert [r.outcome for r in swept] == ["STARTED", "OK"] and swept[-1].rpc == "registry.retention_sweep"
    assert not [r for r in read_records(running.edge.audit.path, RecordFilter(subject="traveller:new-1"))]


def test_the_registry_refuses_to_start_without_its_key(settings: Settings, engine: FaceEngine,
                                                       tmp_path: Path) -> None:
    local = _settings(settings, tmp_path)
    initialise_store(local)
    with pytest.raises(RegistryKeyMissing):
        start_server(local, build_service(local, engine))


def test_the_bulk_loader_registers_reports_refusals_and_resumes(running: RunningServer, photos: dict[str, Path],
                                                               tmp_path: Path) -> None:
    import subprocess
    import sys

    rows = tmp_path / "migration.csv"
    rows.write_text(f"m-1,M1,{photos['obama.jpg']},{photos['obama2.jpg']}\n"
                    f"m-bad,M2,{photos['biden.jpg']},{photos['obama2.jpg']}\n")
    command = [sys.executable, "-m", "verifier.cli", "registry", "load", str(rows), "--consent-version", "v1",
               "--server", f"127.0.0.1:{running.port}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 2 and "m-bad: FAILED_PRECONDITION REGISTRATION_REFUSED" in first.stderr, first.stderr
    assert (tmp_path / "migration.csv.done").read_text().split() == ["m-1"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "1 of 2 registered" in again.stdout and "m-1" not in again.stderr
    assert running.registry is not None and running.registry.traveller("m-1").traveller_id == "m-1"


@pytest.mark.parametrize("traveller", ["has space", "x" * 129, "../etc", "\u202eT-1"])
def test_hostile_traveller_ids_are_refused_and_nothing_is_registered(
    stub: rg_grpc.RegistryStub, photos: dict[str, Path], traveller: str
) -> None:
    chip, live = photos["obama2.jpg"].read_bytes(), photos["obama.jpg"].read_bytes()
    code, details = _refusal(lambda: _register(stub, traveller, "P-HOSTILE-1", chip, live))
    assert (code, details["verifier-reason"]) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    code, details = _refusal(lambda: stub.GetTraveller(rg.GetTravellerRequest(traveller_id=traveller), timeout=10))
    assert details["verifier-reason"] == "FIELD_INVALID"


def test_health_reports_the_registry_serving_once_its_index_is_ready(running: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=rg.DESCRIPTOR.services_by_name["Registry"].full_name)
        deadline = time.monotonic() + 10
        while (status := health.Check(request, timeout=5).status) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, f"the registry reported {status}, never SERVING"
            time.sleep(0.05)
        assert running.registry.ready  # type: ignore[union-attr]
