"""Calibration tables: target false-match rate to score threshold, for one model.

`verifier eval --calibrate` measures a table on labeled data and writes it to
``models/calibration/<pack>.json`` (committed: a few numbers, so a fresh
machine serves calibrated thresholds). The server loads the table of its pack
and takes the row for ``matching.target_fmr``. Rows are not interpolated: the
server takes the row with the largest FMR at or below the target, so the
threshold is never laxer than asked for. A table made for another model is
refused at start, since its scores mean something else.

A table may also hold 1:N rows (``identification``): for a target
false-positive identification rate and a gallery size, the threshold measured
with real searches of a watch-list of that size (mated: enrolled people; non-
mated: people not enrolled). FPIR grows with the gallery (every enrolled
template is one more chance of a false hit), so the watch-list service takes,
for each search, the row for its target FPIR at the smallest measured gallery
at or above the number of templates searched; a gallery larger than any
measured takes the largest measured one, with a warning, since its real FPIR
is higher than stated. Only a table without 1:N rows leaves the watch-list at
its configured threshold.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from verifier.config import Settings, WatchlistSettings
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
class IdentificationRow:
    """1:N: the threshold that gave at most ``target_fpir`` on a gallery of
    ``gallery_size`` templates, and what was measured there."""

    target_fpir: float
    gallery_size: int
    threshold: float
    # On the calibration searches, at this threshold.
    measured_fpir: float
    false_positives: int
    non_mated_searches: int
    fnir: float
    mated_searches: int


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
    identification: tuple[IdentificationRow, ...] = ()

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
        identification = tuple(IdentificationRow(**row) for row in raw.pop("identification", ()))
        table = CalibrationTable(**raw, rows=rows, identification=identification)
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


@dataclass(frozen=True)
class IdentificationThreshold:
    """The score a watch-list candidate must reach, and the false-positive
    identification rate (share of searches for someone not enrolled that
    return a candidate) it stands for."""

    value: float
    fpir: float
    source: str


class IdentificationThresholds:
    """The 1:N threshold for a search, by the size of the gallery it searches.

    With 1:N rows: among the rows with the largest target FPIR at or below the
    configured target (never laxer), the one at the smallest measured gallery
    at or above the gallery searched; beyond the largest measured gallery, the
    largest one, with a warning (logged once per process). Without rows: the
    configured threshold, whatever the gallery.
    """

    def __init__(
        self, rows: tuple[IdentificationRow, ...], fallback: IdentificationThreshold, describe: str = ""
    ) -> None:
        self._rows = tuple(sorted(rows, key=lambda row: row.gallery_size))
        self._fallback = fallback
        self._describe = describe
        self._warned = threading.Event()

    @classmethod
    def fixed(cls, threshold: IdentificationThreshold) -> "IdentificationThresholds":
        """One threshold for every gallery (the configured one, or -1 to see every score)."""
        return cls((), threshold)

    @classmethod
    def from_table(
        cls, table: CalibrationTable, path: Path, target_fpir: float, fallback: IdentificationThreshold
    ) -> "IdentificationThresholds":
        if not table.identification:
            log.warning("calibration table %s has no 1:N rows; identification decides at the configured threshold "
                        "%.4f (run `verifier eval --calibrate` to measure them)", path, fallback.value)
            return cls.fixed(fallback)
        eligible = [row for row in table.identification if row.target_fpir <= target_fpir]
        if not eligible:
            strictest = min(row.target_fpir for row in table.identification)
            raise ModelPackError(
                f"watch-list target FPIR {target_fpir:g} is stricter than the 1:N calibration's strictest row "
                f"({strictest:g}) in {path}; calibrate on a larger set or relax watchlist.target_fpir"
            )
        chosen = max(row.target_fpir for row in eligible)
        describe = f"1:N calibration {path.name} ({table.dataset}, {table.created})"
        return cls(tuple(row for row in eligible if row.target_fpir == chosen), fallback, describe)

    @property
    def calibrated(self) -> bool:
        return bool(self._rows)

    def for_gallery(self, size: int) -> IdentificationThreshold:
        """The threshold for a search of ``size`` templates."""
        if not self._rows:
            return self._fallback
        row = next((row for row in self._rows if row.gallery_size >= size), None)
        beyond = row is None
        if row is None:
            row = self._rows[-1]
            if not self._warned.is_set():
                self._warned.set()
                log.warning("watch-list searches of %d templates exceed the largest calibrated gallery (%d): "
                            "deciding at its threshold, whose real FPIR is higher than %g; calibrate on a larger set",
                            size, row.gallery_size, row.target_fpir)
        where = (f"beyond the largest measured gallery, {row.gallery_size} templates: the real FPIR is higher"
                 if beyond else f"measured on a gallery of {row.gallery_size} templates")
        return IdentificationThreshold(
            value=row.threshold,
            fpir=row.target_fpir,
            source=(f"{self._describe}: FPIR {row.target_fpir:g} searching {size} templates, {where} "
                    f"({row.false_positives} of {row.non_mated_searches} non-mated searches hit, "
                    f"FNIR {100 * row.fnir:.2f} %)"),
        )


def configured_identification_threshold(settings: WatchlistSettings) -> IdentificationThreshold:
    """The configured 1:N threshold: served only where the pack's table has no 1:N rows."""
    return IdentificationThreshold(
        value=settings.threshold,
        fpir=settings.threshold_fpir,
        source="configured watchlist.threshold (the pack's calibration table has no 1:N rows)",
    )


def identification_thresholds(settings: Settings, model_id: str) -> IdentificationThresholds:
    """The watch-list's thresholds: the 1:N rows of the pack's calibration table,
    or the configured threshold where the table has none (or there is no table)."""
    fallback = configured_identification_threshold(settings.watchlist)
    path = calibration_path(settings)
    if not path.exists():
        if settings.matching.calibration_file is not None:
            raise ModelPackError(f"calibration table {path} (matching.calibration_file) does not exist")
        return IdentificationThresholds.fixed(fallback)
    table = load_table(path)
    table.require_model(model_id, path)
    return IdentificationThresholds.from_table(table, path, settings.watchlist.target_fpir, fallback)
