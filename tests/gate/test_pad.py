"""Passive PAD in the gate: reported, decided at its threshold, never silently off."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from tests.conftest import loopback_server, with_pack
from tests.face.manifests import with_edited_manifest
from verifier.app import build_service
from verifier.config import GateSettings
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.gate.service import GateService
from verifier.pipeline import FaceEngine
from verifier.v1 import audit_pb2, audit_pb2_grpc
from verifier.v1 import gate_pb2 as pb
from verifier.v1 import gate_pb2_grpc as pb_grpc
from verifier.v1 import verifier_pb2_grpc as vpb_grpc
from verifier.v1 import verifier_pb2 as vpb


def _legacy(settings: Settings, pad_threshold: float | None) -> Settings:
    local = with_pack(settings, "fast-legacy")
    local.gate.pad_threshold = pad_threshold
    local.gate.watchlist_outage = "retry"  # no watch-list here: what is judged is the PAD finding
    return local


@pytest.fixture(scope="module")
def gate_at(legacy_engine: FaceEngine, settings: Settings,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[float | None, grpc.Channel]]:
    """Servers of the fast-legacy pack: PAD off, and PAD deciding at a threshold above any photo's score."""
    channels = {}
    with loopback_server(_legacy(settings, None), legacy_engine, tmp_path_factory.mktemp("pad"), False) as report, \
            loopback_server(_legacy(settings, 0.9999), legacy_engine, tmp_path_factory.mktemp("pad"), False) as strict:
        with grpc.insecure_channel(report) as first, grpc.insecure_channel(strict) as second:
            channels[None], channels[0.9999] = first, second
            yield channels


def _screen(channel: grpc.Channel, live: bytes, chip: bytes, transaction: str = "") -> pb.ScreenResponse:
    return pb_grpc.GateStub(channel).Screen(pb.ScreenRequest(
        frames=[vpb.Image(data=live)], reference=vpb.FaceSample(image=vpb.Image(data=chip)),
        gate_id="gate-pad", transaction_id=transaction or uuid.uuid4().hex, attempt=1), timeout=60)


def test_without_a_threshold_the_pad_model_is_not_run(
    gate_at: dict[float | None, grpc.Channel], photos: dict[str, Path]
) -> None:
    answer = _screen(gate_at[None], photos["obama2.jpg"].read_bytes(), photos["obama.jpg"].read_bytes())
    assert not answer.pad_checked and answer.pad_score == 0.0
    assert "PRESENTATION_ATTACK_SUSPECTED" not in answer.reasons


def test_a_live_probability_over_the_threshold_passes(
    legacy_engine: FaceEngine, settings: Settings, photos: dict[str, Path], tmp_path: Path
) -> None:
    with loopback_server(_legacy(settings, 0.5), legacy_engine, tmp_path, False) as address, \
            grpc.insecure_channel(address) as channel:
        answer = _screen(channel, photos["obama2.jpg"].read_bytes(), photos["obama.jpg"].read_bytes())
    assert answer.pad_checked and answer.pad_score > answer.pad_threshold == pytest.approx(0.5)
    assert "PRESENTATION_ATTACK_SUSPECTED" not in answer.reasons


def test_a_live_probability_under_the_threshold_is_referred(
    gate_at: dict[float | None, grpc.Channel], photos: dict[str, Path]
) -> None:
    transaction = uuid.uuid4().hex
    answer = _screen(gate_at[0.9999], photos["obama2.jpg"].read_bytes(), photos["obama.jpg"].read_bytes(), transaction)
    assert answer.pad_checked and answer.pad_score < answer.pad_threshold
    assert answer.decision == pb.REFER and "PRESENTATION_ATTACK_SUSPECTED" in answer.reasons
    (record,) = audit_pb2_grpc.AuditStub(gate_at[0.9999]).ListRecords(
        audit_pb2.ListRecordsRequest(subject=f"transaction:{transaction}"), timeout=10).records
    assert f"pad_score={answer.pad_score:.4f}; pad_threshold=0.9999" in record.decision
    assert "PRESENTATION_ATTACK_SUSPECTED" in record.reason


def test_a_pad_threshold_with_a_pack_that_has_no_pad_model_stops_the_start(
    settings: Settings, engine: FaceEngine
) -> None:
    """The operator believes attacks are checked; they would not be."""
    local = settings.model_copy(deep=True)
    local.gate.pad_threshold = 0.5
    with pytest.raises(ModelPackError, match="no liveness model"):
        GateService(local, build_service(local, engine), None)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, float("nan")])
def test_a_nonsense_pad_threshold_is_refused(value: float) -> None:
    with pytest.raises(ValidationError):
        GateSettings(pad_threshold=value)


def test_a_pad_model_that_fails_refers_the_traveller_and_the_server_goes_on_serving(
    settings: Settings, photos: dict[str, Path], tmp_path: Path
) -> None:
    """A deployer's PAD contract that does not fit its model (64x64 fed to a 128x128
    graph): ONNX Runtime refuses each run; the gate refers, never accepts."""
    broken = with_edited_manifest(_legacy(settings, 0.5), tmp_path, "width = 128, height = 128",
                                  "width = 64, height = 64")
    engine = FaceEngine.from_settings(broken)
    with loopback_server(broken, engine, tmp_path / "data", False) as address, \
            grpc.insecure_channel(address) as channel:
        for _ in range(2):
            answer = _screen(channel, photos["obama2.jpg"].read_bytes(), photos["obama.jpg"].read_bytes())
            assert answer.decision == pb.REFER and "INTERNAL_FAULT" in answer.reasons
        verified = vpb_grpc.FaceVerifierStub(channel).Verify(vpb.VerifyRequest(
            probe=vpb.Image(data=photos["obama2.jpg"].read_bytes()),
            reference=vpb.FaceSample(image=vpb.Image(data=photos["obama.jpg"].read_bytes()))), timeout=60)
        assert verified.match

