from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifier.calibration import (
    UNCALIBRATED_FLOOR,
    IdentificationThresholds,
    calibration_path,
    identification_thresholds,
    load_table,
    scored_models,
    serving_threshold,
)
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.pipeline import FaceEngine


def _local(settings: Settings) -> Settings:
    return settings.model_copy(deep=True)


def _altered(settings: Settings, path: Path, key: str, value: object) -> Path:
    """The served table with ``key`` set to ``value``, written to ``path``."""
    raw = json.loads(calibration_path(settings).read_text())
    raw[key] = value
    path.write_text(json.dumps(raw))
    return path


def test_the_shipped_table_is_for_the_default_packs_model(settings: Settings, engine: FaceEngine) -> None:
    """Fails when a model is re-prepared without recalibrating: run `verifier eval --calibrate`."""
    table = load_table(calibration_path(settings))
    assert table.model_id == engine.model_id
    assert table.pack == settings.models.pack and table.alignment == "detected"
    thresholds = [row.threshold for row in sorted(table.rows, key=lambda row: -row.target_fmr)]
    assert thresholds == sorted(thresholds), "a stricter FMR must never have a lower threshold"
    for row in table.rows:
        assert row.measured_fmr <= row.target_fmr
        assert row.fnmr_low <= row.fnmr <= row.fnmr_high


def test_the_row_taken_is_never_laxer_than_the_target(settings: Settings, engine: FaceEngine) -> None:
    local = _local(settings)
    table = load_table(calibration_path(local))
    by_fmr = {row.target_fmr: row for row in table.rows}
    local.matching.target_fmr = 1e-3
    assert serving_threshold(local, engine.model_id).value == by_fmr[1e-3].threshold
    local.matching.target_fmr = 5e-4
    threshold = serving_threshold(local, engine.model_id)
    assert threshold.false_match_rate == 1e-4 and threshold.value == by_fmr[1e-4].threshold
    local.matching.target_fmr = min(by_fmr) / 10
    with pytest.raises(ModelPackError, match="stricter than the table"):
        serving_threshold(local, engine.model_id)


def test_a_table_made_for_another_model_is_refused(settings: Settings, engine: FaceEngine, tmp_path: Path) -> None:
    local = _local(settings)
    local.matching.calibration_file = _altered(settings, tmp_path / "other.json", "model_id",
                                               "faceplugin-feature-512:84fd65a16b57")
    with pytest.raises(ModelPackError, match="was made for faceplugin-feature-512"):
        serving_threshold(local, engine.model_id)


def test_a_pack_without_a_table_serves_only_when_allowed_and_never_below_the_floor(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    local = _local(settings)
    local.matching.calibration_dir = tmp_path
    with pytest.raises(ModelPackError, match="ALLOW_UNCALIBRATED"):
        serving_threshold(local, engine.model_id)
    local.matching.allow_uncalibrated = True
    threshold = serving_threshold(local, engine.model_id)
    assert threshold.value == local.matching.default_threshold >= UNCALIBRATED_FLOOR
    assert "configured default" in threshold.source
    local.matching.default_threshold = UNCALIBRATED_FLOOR - 0.01
    with pytest.raises(ModelPackError, match="matching.default_threshold"):
        serving_threshold(local, engine.model_id)


def test_the_shipped_tables_record_the_models_they_were_measured_on(settings: Settings) -> None:
    """Fails when a model is re-prepared without recalibrating: run `verifier eval --calibrate`."""
    for pack in ("default", "fast-legacy", "research", "fusion"):
        local = _local(settings)
        local.models.pack = pack
        assert load_table(calibration_path(local)).models == scored_models(local), pack


def test_a_named_table_that_is_absent_is_an_error(settings: Settings, engine: FaceEngine, tmp_path: Path) -> None:
    local = _local(settings)
    local.matching.calibration_file = tmp_path / "missing.json"
    with pytest.raises(ModelPackError, match="does not exist"):
        serving_threshold(local, engine.model_id)


def test_a_malformed_table_is_refused(settings: Settings, engine: FaceEngine, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": 1, "model_id": "x", "models": {"x": ""}}')
    local = _local(settings)
    local.matching.calibration_file = broken
    with pytest.raises(ModelPackError, match="cannot read calibration table"):
        serving_threshold(local, engine.model_id)


def test_the_shipped_table_has_1_to_n_rows_measured_by_real_searches(settings: Settings, engine: FaceEngine) -> None:
    """Fails when the pack is recalibrated without its 1:N rows: run `verifier eval --calibrate`."""
    table = load_table(calibration_path(settings))
    assert table.identification, "no 1:N rows: the watch-list would fall back to watchlist.threshold"
    sizes = {row.gallery_size for row in table.identification}
    assert len(sizes) >= 3
    for target in {row.target_fpir for row in table.identification}:
        rows = sorted((r for r in table.identification if r.target_fpir == target), key=lambda r: r.gallery_size)
        for row in rows:
            assert row.measured_fpir <= row.target_fpir and row.non_mated_searches >= 1000
            assert 0 <= row.fnir < 1 and row.mated_searches > 0
        # A larger gallery gives a false hit more chances: its threshold is not lower.
        assert [r.threshold for r in rows] == sorted(r.threshold for r in rows)


def _thresholds(settings: Settings, engine: FaceEngine, target_fpir: float) -> IdentificationThresholds:
    local = _local(settings)
    local.watchlist.target_fpir = target_fpir
    return identification_thresholds(local, engine.model_id)


def test_the_1_to_n_row_is_at_or_above_the_gallery_searched(settings: Settings, engine: FaceEngine) -> None:
    table = load_table(calibration_path(settings))
    rows = sorted((r for r in table.identification if r.target_fpir == 1e-2), key=lambda r: r.gallery_size)
    thresholds = _thresholds(settings, engine, 1e-2)
    assert thresholds.calibrated
    smallest, largest = rows[0], rows[-1]
    assert thresholds.for_gallery(1).value == smallest.threshold
    assert thresholds.for_gallery(smallest.gallery_size).value == smallest.threshold
    assert thresholds.for_gallery(smallest.gallery_size + 1).value == rows[1].threshold
    at_largest = thresholds.for_gallery(largest.gallery_size)
    assert at_largest.value == largest.threshold and "beyond" not in at_largest.source
    beyond = thresholds.for_gallery(largest.gallery_size * 10)
    assert beyond.value == largest.threshold and beyond.fpir == 1e-2
    assert "beyond the largest measured gallery" in beyond.source


def test_the_1_to_n_target_is_never_laxer(settings: Settings, engine: FaceEngine) -> None:
    table = load_table(calibration_path(settings))
    strict = {r.gallery_size: r.threshold for r in table.identification if r.target_fpir == 1e-3}
    between = _thresholds(settings, engine, 5e-3).for_gallery(1)
    assert between.fpir == 1e-3 and between.value == strict[min(strict)]
    with pytest.raises(ModelPackError, match="stricter than the 1:N calibration"):
        _thresholds(settings, engine, 1e-5)


def test_a_table_without_1_to_n_rows_keeps_the_configured_threshold(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    raw = json.loads(calibration_path(settings).read_text())
    del raw["identification"]
    older = tmp_path / "older.json"
    older.write_text(json.dumps(raw))
    local = _local(settings)
    local.matching.calibration_file = older
    thresholds = identification_thresholds(local, engine.model_id)
    assert not thresholds.calibrated
    chosen = thresholds.for_gallery(10_000)
    assert chosen.value == local.watchlist.threshold and "configured watchlist.threshold" in chosen.source


def test_a_table_measured_with_other_template_settings_is_refused(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    """Averaged second looks or mirror embedding change every template: a table
    measured without them (the shipped ones record no pipeline key, so their
    defaults) does not serve with them, nor one measured with them without;
    each refusal names the key."""
    shipped = calibration_path(settings)
    served = serving_threshold(settings, engine.model_id).value
    for section, name, value in (("detector", "region_jitter_looks", 2), ("pipeline", "embed_mirror", True)):
        local = _local(settings)
        setattr(getattr(local, section), name, value)
        local.matching.calibration_file = shipped
        with pytest.raises(ModelPackError, match=f"key pipeline.{name} records"):
            serving_threshold(local, engine.model_id)
    averaged = _altered(settings, tmp_path / "averaged.json", "pipeline",
                        {"embed_mirror": False, "region_jitter_looks": 2, "region_jitter": 0.05})
    local = _local(settings)
    local.matching.calibration_file = averaged
    with pytest.raises(ModelPackError, match="key pipeline.region_jitter"):
        serving_threshold(local, engine.model_id)
    local.detector.region_jitter_looks = 2
    assert serving_threshold(local, engine.model_id).value == served
    local.detector.region_jitter = 0.1
    with pytest.raises(ModelPackError, match="key pipeline.region_jitter records 0.05"):
        serving_threshold(local, engine.model_id)
    with pytest.raises(ModelPackError, match="key pipeline = 'averaged'"):
        load_table(_altered(settings, averaged, "pipeline", "averaged"))
