"""Calibration tables: target false-match rate to score threshold, for one model.

`verifier eval --calibrate` measures a table on labeled data and writes it to
``models/calibration/<pack>.json`` (committed: a few numbers, so a fresh
machine serves calibrated thresholds). The server loads the table of its pack
and takes the row for ``matching.target_fmr``. Rows are not interpolated: the
server takes the row with the largest FMR at or below the target, so the
threshold is never laxer than asked for. A table made for another model is
refused at start, since its scores mean something else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.matching import Threshold, default_threshold

log = logging.getLogger(__name__)

CALIBRATION_SCHEMA = 1


@dataclass(frozen=True)
class CalibrationRow:
    target_fmr: float
    threshold: float
    # On the calibration set, at this threshold.
    measured_fmr: float
    false_matches: int
    fnmr: float
    fnmr_low: float
    fnmr_high: float
    fnmr_interval: str


@dataclass(frozen=True)
class CalibrationTable:
    model_id: str
    pack: str
    dataset: str
    images: int
    subjects: int
    mated_comparisons: int
    non_mated_comparisons: int
    failure_to_acquire: float
    alignment: str
    created: str
    rows: tuple[CalibrationRow, ...]
    schema: int = CALIBRATION_SCHEMA

    def row_for(self, target_fmr: float) -> CalibrationRow:
        """The row with the largest FMR at or below ``target_fmr``."""
        eligible = [row for row in self.rows if row.target_fmr <= target_fmr]
        if not eligible:
            strictest = min(row.target_fmr for row in self.rows)
            raise ModelPackError(
                f"target FMR {target_fmr:g} is stricter than the table's strictest row ({strictest:g}); "
                "calibrate on a larger set or relax matching.target_fmr"
            )
        return max(eligible, key=lambda row: row.target_fmr)

    def threshold_for(self, target_fmr: float, path: Path) -> Threshold:
        row = self.row_for(target_fmr)
        return Threshold(
            value=row.threshold,
            false_match_rate=row.target_fmr,
            source=(
                f"calibration {path.name}: FMR {row.target_fmr:g} on {self.dataset} ({self.images:,} images, "
                f"{self.non_mated_comparisons:,} non-mated comparisons, FNMR {100 * row.fnmr:.2f} %), {self.created}"
            ),
        )

    def require_model(self, model_id: str, path: Path) -> None:
        if self.model_id != model_id:
            raise ModelPackError(
                f"calibration table {path} was made for {self.model_id}, the service runs {model_id}: "
                "run `verifier eval --calibrate` for this pack or point matching.calibration_file at its table"
            )


def write_table(table: CalibrationTable, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(table), indent=2) + "\n")


def load_table(path: Path) -> CalibrationTable:
    try:
        raw = json.loads(path.read_text())
        if raw.get("schema") != CALIBRATION_SCHEMA:
            raise ModelPackError(f"calibration table {path} has schema {raw.get('schema')}, expected {CALIBRATION_SCHEMA}")
        rows = tuple(CalibrationRow(**row) for row in raw.pop("rows"))
        table = CalibrationTable(**raw, rows=rows)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelPackError(f"cannot read calibration table {path}: {exc}") from exc
    if not table.rows:
        raise ModelPackError(f"calibration table {path} has no rows")
    return table


def calibration_path(settings: Settings) -> Path:
    return settings.matching.calibration_file or settings.matching.calibration_dir / f"{settings.models.pack}.json"


def serving_threshold(settings: Settings, model_id: str) -> Threshold:
    """The threshold the service decides at: from the pack's calibration table, or the
    configured default where the pack has none (a named table that is absent is an error)."""
    path = calibration_path(settings)
    if not path.exists():
        if settings.matching.calibration_file is not None:
            raise ModelPackError(f"calibration table {path} (matching.calibration_file) does not exist")
        log.warning("no calibration table at %s; deciding at the configured default threshold", path)
        return default_threshold(settings.matching)
    table = load_table(path)
    table.require_model(model_id, path)
    return table.threshold_for(settings.matching.target_fmr, path)
