"""Site tables: thresholds from a site's own non-mated comparisons raise the pack's, never lower
them; every number is checked and a table for other models or another point is refused at start."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from verifier.calibration import identification_thresholds, scored_models, serving_threshold
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.bounds import allowed_errors, lowest_supported, upper_bound
from verifier.evaluation.site import fmr_rows, fpir_rows
from verifier.pipeline import FaceEngine
from verifier.site_calibration import SiteTable, load_site_table, write_site_table

CAPTURES = 600


def _templates(shared: float, seed: int = 7) -> np.ndarray:
    """Unit vectors of CAPTURES different people. ``shared`` > 0 gives every one a common
    component, as one studio's lighting, crop and camera do: non-mated scores rise."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((CAPTURES, 128)) + shared * rng.standard_normal(128) * math.sqrt(128) / 10
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _table(settings: Settings, engine: FaceEngine, vectors: np.ndarray) -> SiteTable:
    rows, n = fmr_rows(vectors, (1e-2, 1e-3, 1e-4), 0.95, 256)
    point = engine.operating_point
    return SiteTable(
        site="test studio", source="synthetic", pack=settings.models.pack, model_id=engine.model_id,
        models=scored_models(settings), runtime=point.runtime, precision=point.precision, created="2026-12-07",
        images=len(vectors), acquired=len(vectors), failures={}, near_duplicates=0, duplicate_score=0.6,
        non_mated_comparisons=n, lowest_supported_fmr=lowest_supported(n, 0.95), confidence=0.95,
        rows=tuple(rows), identification=tuple(fpir_rows(vectors, (1e-2,), (100,), 0.95, 1)),
    )


def _serving(settings: Settings, path: Path) -> Settings:
    local = settings.model_copy(deep=True)
    local.matching.site_calibration_file = path
    return local


def test_the_bound_is_the_largest_count_whose_upper_bound_meets_the_target() -> None:
    for n, target in ((10_000, 1e-2), (500_000, 1e-3), (2_000_000, 1e-4)):
        k = allowed_errors(n, target, 0.95)
        assert k is not None and upper_bound(k, n, 0.95) <= target < upper_bound(k + 1, n, 0.95)
        assert k < target * n
    # With no false match n comparisons support about 3 / n (the rule of three), not less.
    assert lowest_supported(100_000, 0.95) == pytest.approx(3 / 100_000, rel=0.01)
    assert allowed_errors(1000, 1e-3, 0.95) is None


def test_a_harder_conditions_non_mated_scores_raise_the_threshold(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    pack = serving_threshold(settings, engine.model_id, engine.operating_point)
    table = _table(settings, engine, _templates(shared=4.0))
    path = tmp_path / "site.json"
    write_site_table(table, path)
    row = table.row_for(settings.matching.target_fmr)
    assert row is not None and row.supported and row.threshold > pack.value
    served = serving_threshold(_serving(settings, path), engine.model_id, engine.operating_point)
    assert served.value == row.threshold and served.false_match_rate == pack.false_match_rate
    assert "site calibration site.json" in served.source and f"raised from the pack's {pack.value:.4f}" in served.source
    raised = identification_thresholds(_serving(settings, path), engine.model_id, engine.operating_point)
    site_row = table.identification[0]
    at = raised.for_gallery(50)
    assert at.value == max(site_row.threshold, identification_thresholds(
        settings, engine.model_id, engine.operating_point).for_gallery(50).value)


def test_a_site_table_never_lowers_the_packs_threshold(settings: Settings, engine: FaceEngine, tmp_path: Path) -> None:
    pack = serving_threshold(settings, engine.model_id, engine.operating_point)
    pack_ident = identification_thresholds(settings, engine.model_id, engine.operating_point)
    table = _table(settings, engine, _templates(shared=0.0))
    path = tmp_path / "site.json"
    write_site_table(table, path)
    row = table.row_for(settings.matching.target_fmr)
    assert row is not None and row.threshold < pack.value
    served = serving_threshold(_serving(settings, path), engine.model_id, engine.operating_point)
    assert served.value == pack.value and "not stricter, pack's kept" in served.source
    ident = identification_thresholds(_serving(settings, path), engine.model_id, engine.operating_point)
    for size in (1, 100, 10_000):
        assert ident.for_gallery(size).value == pack_ident.for_gallery(size).value


def test_an_unsupported_target_is_still_a_floor(settings: Settings, engine: FaceEngine, tmp_path: Path) -> None:
    """Too few comparisons for the target: the row sits above every score seen and still raises."""
    vectors = _templates(shared=6.0)[:40]
    table = replace(_table(settings, engine, vectors), identification=())
    row = table.row_for(1e-4)
    assert row is not None and not row.supported and row.fmr_upper > 1e-4
    path = tmp_path / "site.json"
    write_site_table(table, path)
    local = _serving(settings, path)
    local.matching.target_fmr = 1e-4
    served = serving_threshold(local, engine.model_id, engine.operating_point)
    assert served.value >= row.threshold and "not supported" in served.source


def _broken(raw: dict, change: str) -> dict:
    if change == "nan threshold":
        raw["rows"][1]["threshold"] = float("nan")
    elif change == "threshold above 1":
        raw["rows"][1]["threshold"] = 1.5
    elif change == "stricter target, laxer threshold":
        raw["rows"][2]["threshold"] = raw["rows"][0]["threshold"] - 0.1
    elif change == "negative count":
        raw["rows"][0]["false_matches"] = -1
    elif change == "fractional comparisons":
        raw["non_mated_comparisons"] = 10.5
    elif change == "supported not a flag":
        raw["rows"][0]["supported"] = "yes"
    elif change == "no rows":
        raw["rows"] = []
    elif change == "other models":
        raw["models"] = {name: "0" * 64 for name in raw["models"]}
    elif change == "other pack":
        raw["pack"] = "fast-legacy"
    elif change == "other point":
        raw["precision"] = "bf16" if raw["precision"] == "f32" else "f32"
    elif change == "a pack table":
        raw["kind"] = "pack"
    elif change == "upper bound out of range":
        raw["identification"][0]["fpir_upper"] = 2.0
    return raw


@pytest.mark.parametrize("change, message", [
    ("nan threshold", "rows\\[1\\].threshold"),
    ("threshold above 1", "rows\\[1\\].threshold"),
    ("stricter target, laxer threshold", "below the threshold of the laxer"),
    ("negative count", "rows\\[0\\].false_matches"),
    ("fractional comparisons", "non_mated_comparisons"),
    ("supported not a flag", "rows\\[0\\].supported"),
    ("no rows", "no rows"),
    ("other models", "measured on other models"),
    ("other pack", "was made for pack 'fast-legacy'"),
    ("other point", "was measured at"),
    ("a pack table", "is not a site calibration table"),
    ("upper bound out of range", "identification\\[0\\].fpir_upper"),
])
def test_a_bad_site_table_is_refused_at_start(
    settings: Settings, engine: FaceEngine, tmp_path: Path, change: str, message: str
) -> None:
    good = tmp_path / "good.json"
    write_site_table(_table(settings, engine, _templates(shared=4.0)), good)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(json.loads(good.read_text()), change)))
    with pytest.raises(ModelPackError, match=message):
        serving_threshold(_serving(settings, bad), engine.model_id, engine.operating_point)
    with pytest.raises(ModelPackError, match=message):
        identification_thresholds(_serving(settings, bad), engine.model_id, engine.operating_point)


def test_a_named_site_table_that_is_absent_is_refused(settings: Settings, engine: FaceEngine, tmp_path: Path) -> None:
    with pytest.raises(ModelPackError, match="does not exist"):
        serving_threshold(_serving(settings, tmp_path / "missing.json"), engine.model_id, engine.operating_point)
    (tmp_path / "garbled.json").write_text("{not json")
    with pytest.raises(ModelPackError, match="cannot read site calibration table"):
        load_site_table(tmp_path / "garbled.json")
