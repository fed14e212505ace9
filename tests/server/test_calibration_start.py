"""Every number that decides is checked before anything is served: real
`verifier serve` processes given a calibration table (or none) they must not
serve with stop with exit code 2, naming the file and the key, and never
reach the point of listening."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.processes import SERVING, cli, serving
from verifier.calibration import UNCALIBRATED_FLOOR, calibration_path
from verifier.config import Settings
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

# What the server logs once it listens (verifier.app.start_server).
SERVED = "verifier.app: serving"


def _nan_1_to_n(raw: dict) -> str:
    raw["identification"][0]["threshold"] = math.nan
    return "identification[0].threshold"


def _minus_one_1_to_1(raw: dict) -> str:
    for row in raw["rows"]:
        row["threshold"] = -1.0
    return "rows[0].threshold"


def _other_models(raw: dict) -> str:
    raw["models"]["retinaface-mnet025"] = "0" * 64
    return "models.retinaface-mnet025"


def _no_hashes(raw: dict) -> str:
    del raw["models"]
    return "key models is missing"


@pytest.mark.parametrize("spoil", [_nan_1_to_n, _minus_one_1_to_1, _other_models, _no_hashes])
def test_a_table_that_must_not_serve_stops_the_start(
    tmp_path: Path, settings: Settings, spoil: Callable[[dict], str]
) -> None:
    raw = json.loads(calibration_path(settings).read_text())
    named = spoil(raw)
    table = tmp_path / "table.json"
    table.write_text(json.dumps(raw))  # NaN is written as the JSON extension NaN, as a careless tool would
    result = cli(tmp_path, "serve", env={"VERIFIER_MATCHING__CALIBRATION_FILE": str(table)})
    assert result.returncode == 2, result.stderr
    assert str(table) in result.stderr and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and SERVED not in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VERIFIER_MATCHING__DEFAULT_THRESHOLD": "-1"}, "VERIFIER_MATCHING__ALLOW_UNCALIBRATED"),
        ({"VERIFIER_MATCHING__DEFAULT_THRESHOLD": "-1", "VERIFIER_MATCHING__ALLOW_UNCALIBRATED": "true"},
         "matching.default_threshold = -1.0"),
        ({"VERIFIER_MATCHING__ALLOW_UNCALIBRATED": "true", "VERIFIER_WATCHLIST__THRESHOLD": "0.3"},
         "watchlist.threshold = 0.3"),
    ],
)
def test_a_pack_without_a_table_does_not_serve_below_the_floor(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    empty = tmp_path / "calibration"
    empty.mkdir()
    result = cli(tmp_path, "serve", env={"VERIFIER_MATCHING__CALIBRATION_DIR": str(empty), **env})
    assert result.returncode == 2, result.stderr
    assert str(empty / "default.json") in result.stderr and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and SERVED not in result.stderr


def test_an_uncalibrated_pack_allowed_on_purpose_serves_at_the_floor(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    empty = tmp_path / "calibration"
    empty.mkdir()
    env = {"VERIFIER_MATCHING__CALIBRATION_DIR": str(empty), "VERIFIER_MATCHING__ALLOW_UNCALIBRATED": "true"}
    with serving(tmp_path, env) as server, grpc.insecure_channel(server.address) as channel:
        assert server.health(channel, "verifier.v1.FaceVerifier") == SERVING
        answer = pb_grpc.FaceVerifierStub(channel).Verify(pb.VerifyRequest(
            probe=pb.Image(data=photos["obama.jpg"].read_bytes()),
            reference=pb.FaceSample(image=pb.Image(data=photos["obama2.jpg"].read_bytes()))), timeout=60)
        assert answer.threshold == pytest.approx(UNCALIBRATED_FLOOR)
        assert "allow_uncalibrated" in answer.threshold_source


def test_the_served_tables_own_sha256_is_logged(tmp_path: Path, settings: Settings) -> None:
    path = calibration_path(settings)
    with serving(tmp_path) as server:
        assert f"calibration table {path} sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in server.log
        utility = settings.matching.calibration_dir / f"{settings.models.pack}-quality.json"
        assert f"utility table {utility} sha256 {hashlib.sha256(utility.read_bytes()).hexdigest()}" in server.log


@pytest.mark.parametrize(("value", "at"), [(math.nan, 50), (-1.0, 0), (1e9, 3)])
def test_a_utility_table_with_a_quantile_that_must_not_serve_stops_the_start(
    tmp_path: Path, settings: Settings, value: float, at: int
) -> None:
    shipped = settings.matching.calibration_dir / f"{settings.models.pack}-quality.json"
    raw = json.loads(shipped.read_text())
    (model_id,) = raw["members"]
    raw["members"][model_id][at] = value  # 1e9 early: the quantiles after it fall
    table = tmp_path / "quality.json"
    table.write_text(json.dumps(raw))
    result = cli(tmp_path, "serve", env={"VERIFIER_QUALITY__CALIBRATION_FILE": str(table)})
    assert result.returncode == 2, result.stderr
    key = f"members.{model_id}[{at + 1 if value == 1e9 else at}]"
    assert str(table) in result.stderr and key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and SERVED not in result.stderr
