from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from verifier.calibration import load_table, scored_models
from verifier.cli import EXIT_ERROR, build_parser
from verifier.config import Settings
from verifier.pipeline import FaceEngine


def _run(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args, settings))


@pytest.fixture
def local(settings: Settings, tmp_path: Path) -> Settings:
    local = settings.model_copy(deep=True)
    local.matching.calibration_dir = tmp_path / "calibration"
    return local


def test_eval_calibrate_writes_the_report_and_the_table(
    local: Settings, engine: FaceEngine, mini_lfw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert _run(["eval", str(mini_lfw), "--name", "mini", "--output", str(out), "--calibrate"], local) == 0
    printed = capsys.readouterr().out
    assert "2-fold accuracy" in printed and "FMR 0.001: threshold" in printed
    document = json.loads((out / "report.json").read_text())
    assert document["dataset"]["listed_pairs"] == 80 and len(document["protocol"]["accuracies"]) == 2
    table = load_table(local.matching.calibration_dir / "default.json")
    assert table.model_id == engine.model_id and table.dataset == "mini" and table.alignment == "detected"
    assert table.models == scored_models(local)
    points = {p["target_fmr"]: p["threshold"] for p in document["verification"]["points"]}
    assert {row.target_fmr: row.threshold for row in table.rows} == points
    # 1:N rows from real searches of the people of its images/ folder.
    assert "1:N FPIR 0.01 at gallery" in printed
    assert table.identification and {row.target_fpir for row in table.identification} == {1e-2, 1e-3}
    assert all(row.measured_fpir <= row.target_fpir and row.mated_searches > 0 for row in table.identification)


def test_eval_of_folders_reports_identification(
    local: Settings, mini_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["eval", str(mini_folders), "--output", str(tmp_path)], local) == 0
    assert "1:N rank-1" in capsys.readouterr().out
    assert json.loads((tmp_path / "report.json").read_text())["identification"]["non_mated_searches"] == 10


def test_eval_reports_the_rates_at_a_given_score(
    local: Settings, mini_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Below every score all comparisons match; above every score none does."""
    argv = ["eval", str(mini_folders), "--output", str(tmp_path), "--at-threshold", "-1", "--at-threshold", "1.01"]
    assert _run(argv, local) == 0
    printed = capsys.readouterr().out
    assert "at score -1.0000: FMR 1.00e+00" in printed and "FNMR 0.00 %" in printed
    assert "at score 1.0100: FMR 0.00e+00 (0 false matches" in printed and "FNMR 100.00 %" in printed


@pytest.mark.parametrize("score", ["nan", "inf", "high"])
def test_eval_refuses_a_score_that_is_not_a_finite_number(
    score: str, mini_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["eval", str(mini_folders), "--output", str(tmp_path), "--at-threshold", score])
    assert refused.value.code == 2 and "--at-threshold" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_eval_with_published_landmarks(
    local: Settings, mini_lfw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["eval", str(mini_lfw), "--landmarks", "--output", str(tmp_path)], local) == 0
    assert json.loads((tmp_path / "report.json").read_text())["alignment"] == "published"


def test_calibrating_on_published_landmarks_is_refused(
    local: Settings, mini_lfw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["eval", str(mini_lfw), "--landmarks", "--calibrate", "--output", str(tmp_path)], local) == EXIT_ERROR
    assert "--calibrate needs" in capsys.readouterr().err
    assert not (local.matching.calibration_dir / "default.json").exists()


def test_an_unreadable_set_is_a_clear_error(
    local: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["eval", str(tmp_path / "absent")], local) == EXIT_ERROR
    assert "is not a folder" in capsys.readouterr().err


def test_a_set_where_every_image_fails_reports_full_failure_to_acquire(
    local: Settings, photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Background corners of real photos (no face): the evaluation reports 100 % FTA and no
    1:1 figures instead of failing on empty score lists."""
    root = tmp_path / "faceless"
    for person, name in (("a", "obama.jpg"), ("b", "biden.jpg"), ("c", "obama2.jpg")):
        image = cv2.imread(str(photos[name]))
        (root / person).mkdir(parents=True)
        for i, corner in enumerate((image[:96, :96], image[:96, -96:])):
            cv2.imwrite(str(root / person / f"{i}.png"), corner)
    out = tmp_path / "report"
    assert _run(["eval", str(root), "--output", str(out)], local) == 0
    printed = capsys.readouterr().out
    assert "FTA 6/6 = 100.00 %" in printed and "no 1:1 figures" in printed
    document = json.loads((out / "report.json").read_text())
    assert document["acquisition"]["rate"] == 1.0 and document["verification"] is None
    assert _run(["eval", str(root), "--output", str(out), "--calibrate"], local) == EXIT_ERROR


def test_a_condition_reports_the_served_threshold_on_it(
    local: Settings, settings: Settings, mini_lfw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local.matching.calibration_dir = settings.matching.calibration_dir  # the shipped table: the one served
    assert _run(["eval", str(mini_lfw), "--condition", "downscale-24px", "--output", str(tmp_path)], local) == 0
    printed = capsys.readouterr().out
    assert "downscale-24px" in printed and "served threshold" in printed and "x the target" in printed
    document = json.loads((tmp_path / "report.json").read_text())
    for served in (document["served"], document["served_mixed"]):
        assert served["fmr_ratio"] == pytest.approx(served["fmr"] / served["target_fmr"])
    assert "one side only" in printed
