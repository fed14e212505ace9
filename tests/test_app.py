"""build_service: the served threshold comes from the pack's calibration table."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from verifier.app import build_service
from verifier.calibration import calibration_path, load_table
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.pipeline import FaceEngine
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc


def test_verify_and_compare_answer_with_the_calibrated_threshold(
    channel: grpc.Channel, settings: Settings, photos: dict[str, Path]
) -> None:
    """The session's server is built with default settings, so it loaded the shipped table."""
    row = load_table(calibration_path(settings)).row_for(settings.matching.target_fmr)
    stub = pb_grpc.FaceVerifierStub(channel)
    answer = stub.Verify(
        pb.VerifyRequest(
            probe=pb.Image(data=photos["obama.jpg"].read_bytes()),
            reference=pb.FaceSample(image=pb.Image(data=photos["obama2.jpg"].read_bytes())),
        )
    )
    assert answer.threshold == np.float32(row.threshold)
    assert answer.false_match_rate == row.target_fmr
    assert answer.threshold_source.startswith(f"calibration {calibration_path(settings).name}: FMR {row.target_fmr:g}")
    assert answer.match == (answer.score >= answer.threshold)
    templates = [
        stub.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=photos[name].read_bytes()))).template
        for name in ("obama.jpg", "biden.jpg")
    ]
    compared = stub.CompareTemplates(pb.CompareTemplatesRequest(a=templates[0], b=templates[1]))
    assert compared.threshold == answer.threshold and compared.false_match_rate == row.target_fmr
    assert compared.threshold_source == answer.threshold_source and not compared.match


def test_the_service_refuses_to_start_with_another_models_table(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    raw = json.loads(calibration_path(settings).read_text())
    raw["model_id"] = "mobilefacenet-192:000000000000"
    other = tmp_path / "stale.json"
    other.write_text(json.dumps(raw))
    local = settings.model_copy(deep=True)
    local.matching.calibration_file = other
    with pytest.raises(ModelPackError, match="was made for mobilefacenet-192:000000000000"):
        build_service(local, engine)
