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

Every number in a table decides who passes, so none is trusted: a value that
is not finite or is out of range, or thresholds that get laxer as the target
gets stricter, stop the start naming the file and the key. A table records the
prepared sha256 of the models whose scores it measured (``models``), and a
table for other models stops the start: a re-prepared model has scores on
another scale. A pack without a table serves only where
``matching.allow_uncalibrated`` says so, and then never below
:data:`UNCALIBRATED_FLOOR`.

Tables are per operating point (verifier.modelzoo.runtime): the runtime and
precision the scores were measured at, since bf16 moves scores enough to move a
threshold. ``<pack>.json`` is ONNX Runtime f32 (the tables made before there was
a choice), ``<pack>.<runtime>-<precision>.json`` any other point, and a table
records its own point. ``models.precision = "auto"`` takes bf16 only where the
pack has a bf16 table; an explicit point without a table is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from verifier.config import Settings, WatchlistSettings
from verifier.errors import ModelPackError
from verifier.matching import Threshold, default_threshold
from verifier.modelzoo.manifest import load_manifest
from verifier.modelzoo.runtime import (
    BF16, DEFAULT_POINT, F32, ONNXRUNTIME, OPENVINO, OperatingPoint, candidate_points,
)
from verifier.modelzoo.session import CUDA, providers_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    from verifier.face.quality import UtilityCalibration
    from verifier.site_calibration import SiteRow

log = logging.getLogger(__name__)

CALIBRATION_SCHEMA = 1

# The laxest threshold served without a measured one (matching.allow_uncalibrated,
# or watchlist.threshold for a table without 1:N rows). Every pack measured on
# LFW dev (README, Accuracy) holds FMR 1e-5 at or below it: the strictest,
# fast-legacy, needs 0.5913 there, and its 1:N threshold at FPIR 1 % on 774
# people is 0.5999. A pack never measured may use another score scale, so this
# bounds the damage rather than stating a rate.
UNCALIBRATED_FLOOR = 0.6

# Tasks whose models shape a comparison score; the liveness model decides
# nothing a calibration table measures, so changing it does not void one.
SCORED_TASKS = ("detector", "landmarks", "embedder")


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
    # Model name -> prepared sha256 (models/manifest.toml) of every model whose
    # output the scores depend on, as loaded when the table was measured.
    models: dict[str, str]
    schema: int = CALIBRATION_SCHEMA
    identification: tuple[IdentificationRow, ...] = ()
    # The operating point the scores were measured at.
    runtime: str = ONNXRUNTIME
    precision: str = F32
    # The settings besides the models that change templates, as measured
    # (template_settings); a table without the key was measured at their defaults.
    pipeline: dict[str, object] = field(default_factory=dict)

    @property
    def point(self) -> OperatingPoint:
        return OperatingPoint(self.runtime, self.precision)

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


    def require_models(self, models: dict[str, str], path: Path) -> None:
        """Refuse a table measured on other prepared models than the ones loaded."""
        require_models(self.models, models, path, "run `verifier eval --calibrate` for these models")

    def require_pipeline(self, served: dict[str, object], path: Path) -> None:
        """Refuse a table measured with other template-changing settings than
        ``served``: its thresholds were measured on other templates."""
        recorded = self.pipeline or _DEFAULT_TEMPLATE_SETTINGS
        differ = [key for key in [*served, *(key for key in recorded if key not in served)]
                  if recorded.get(key) != served.get(key)]
        if differ:
            key = differ[0]
            raise ModelPackError(
                f"calibration table {path}: key pipeline.{key} records "
                f"{repr(recorded[key]) if key in recorded else 'nothing'}, the service runs with "
                f"{repr(served[key]) if key in served else 'nothing'}: the templates differ; run "
                "`verifier eval --calibrate` with these settings or serve the settings the table was measured with")


# What a table without a ``pipeline`` key was measured with: the defaults of
# the settings template_settings records.
_DEFAULT_TEMPLATE_SETTINGS: dict[str, object] = {"embed_mirror": False, "region_jitter_looks": 0}


def template_settings(settings: Settings) -> dict[str, object]:
    """The settings besides the models whose change changes every template
    (mirror embedding, the second look's averaged points), as a table records
    them: scores measured with one are not the scores served with another."""
    recorded: dict[str, object] = {"embed_mirror": settings.pipeline.embed_mirror,
                                   "region_jitter_looks": settings.detector.region_jitter_looks}
    if settings.detector.region_jitter_looks:
        recorded["region_jitter"] = settings.detector.region_jitter
    return recorded


def require_models(recorded: dict[str, str], models: dict[str, str], path: Path, remedy: str) -> None:
    """Refuse a table (at ``path``) that ``recorded`` other prepared models than the loaded ``models``."""
    if recorded != models:
        differ = sorted(name for name in models.keys() | recorded.keys() if recorded.get(name) != models.get(name))
        raise ModelPackError(
            f"calibration table {path}: key models.{differ[0]} records {recorded.get(differ[0], 'nothing')}, "
            f"the loaded pack has {models.get(differ[0], 'nothing')} (differing: {', '.join(differ)}): "
            f"the scores were measured on other models; {remedy}"
        )


def scored_models(settings: Settings) -> dict[str, str]:
    """The prepared sha256 of each model of the configured pack that shapes a
    score. The server refuses a model file whose hash differs from the
    manifest's, so these are the hashes of the models it runs."""
    members = load_manifest(settings.models.manifest).members(settings.models.pack)
    return {spec.name: spec.prepared_sha256 for task in SCORED_TASKS for spec in members.get(task, ())}


def _check_number(path: Path, key: str, value: object, low: float, high: float, *, open_low: bool = False) -> None:
    """Stop on a value that is not a finite number in [low, high] (or (low, high])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or value > high or (open_low and value == low):
        bound = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ModelPackError(f"calibration table {path}: key {key} = {value!r} is not a finite number in {bound}")


def _check_values(table: CalibrationTable, path: Path) -> None:
    """Every number of the table in its range. A threshold must be above 0: for
    unrelated faces cosine scores centre near 0, so a threshold at or below it
    accepts about half of all impostors whatever FMR the row claims."""
    if table.runtime not in (ONNXRUNTIME, OPENVINO) or table.precision not in (F32, BF16):
        raise ModelPackError(f"calibration table {path}: runtime {table.runtime!r} and precision "
                             f"{table.precision!r} are not an operating point this service runs")
    _check_number(path, "failure_to_acquire", table.failure_to_acquire, 0.0, 1.0)
    for i, row in enumerate(table.rows):
        key = f"rows[{i}]"
        _check_number(path, f"{key}.target_fmr", row.target_fmr, 0.0, 1.0, open_low=True)
        _check_number(path, f"{key}.threshold", row.threshold, 0.0, 1.0, open_low=True)
        for name in ("measured_fmr", "fnmr", "fnmr_low", "fnmr_high"):
            _check_number(path, f"{key}.{name}", getattr(row, name), 0.0, 1.0)
    for i, ident in enumerate(table.identification):
        key = f"identification[{i}]"
        _check_number(path, f"{key}.target_fpir", ident.target_fpir, 0.0, 1.0, open_low=True)
        _check_number(path, f"{key}.threshold", ident.threshold, 0.0, 1.0, open_low=True)
        _check_number(path, f"{key}.measured_fpir", ident.measured_fpir, 0.0, 1.0)
        _check_number(path, f"{key}.fnir", ident.fnir, 0.0, 1.0)
        if isinstance(ident.gallery_size, bool) or not isinstance(ident.gallery_size, int) or ident.gallery_size < 1:
            raise ModelPackError(f"calibration table {path}: key {key}.gallery_size = {ident.gallery_size!r} "
                                 "is not a positive whole number")
    check_order_and_models(table.rows, table.models, path)
    if not isinstance(table.pipeline, dict) or not all(
            isinstance(value, (bool, int, float)) for value in table.pipeline.values()):
        raise ModelPackError(f"calibration table {path}: key pipeline = {table.pipeline!r} is not a map of settings "
                             "to values (run `verifier eval --calibrate`)")


def check_order_and_models(rows: "Sequence[CalibrationRow | SiteRow]", models: dict[str, str], path: Path) -> None:
    """Thresholds that never get laxer as the target FMR gets stricter, and a sha256 per model."""
    ordered = sorted(enumerate(rows), key=lambda item: -item[1].target_fmr)
    for (_, laxer), (i, stricter) in zip(ordered, ordered[1:]):
        if stricter.threshold < laxer.threshold:
            raise ModelPackError(f"calibration table {path}: key rows[{i}].threshold = {stricter.threshold!r} is "
                                 f"below the threshold of the laxer FMR {laxer.target_fmr:g} ({laxer.threshold!r})")
    for name, digest in models.items():
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ModelPackError(f"calibration table {path}: key models.{name} = {digest!r} is not a sha256")


def write_table(table: CalibrationTable, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(table), indent=2) + "\n")


def load_table(path: Path) -> CalibrationTable:
    """The table at ``path``, every value checked; any fault is a ModelPackError
    naming the file and the key."""
    try:
        raw = json.loads(path.read_bytes())
        if raw.get("schema") != CALIBRATION_SCHEMA:
            raise ModelPackError(f"calibration table {path} has schema {raw.get('schema')}, expected {CALIBRATION_SCHEMA}")
        if not isinstance(raw.get("models"), dict) or not raw["models"]:
            raise ModelPackError(f"calibration table {path}: key models is missing: it must record the prepared "
                                 "sha256 of the models it was measured on (run `verifier eval --calibrate`)")
        rows = tuple(CalibrationRow(**row) for row in raw.pop("rows"))
        identification = tuple(IdentificationRow(**row) for row in raw.pop("identification", ()))
        table = CalibrationTable(**raw, rows=rows, identification=identification)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelPackError(f"cannot read calibration table {path}: {exc}") from exc
    if not table.rows:
        raise ModelPackError(f"calibration table {path} has no rows")
    _check_values(table, path)
    return table


def _served_table(settings: Settings, model_id: str, path: Path, point: OperatingPoint) -> CalibrationTable:
    """The table at ``path``, refused unless measured on the loaded models; its own
    sha256 is logged, so the log says exactly which numbers were served."""
    table = load_table(path)
    table.require_model(model_id, path)
    table.require_models(scored_models(settings), path)
    table.require_pipeline(template_settings(settings), path)
    if table.point != point:
        raise ModelPackError(f"calibration table {path} was measured at {table.point}, the models run at {point}: "
                             f"{calibrate_command(point)} makes a table for {point}")
    log.info("calibration table %s sha256 %s (measured %s on %s)", path,
             hashlib.sha256(path.read_bytes()).hexdigest(), table.created, table.dataset)
    return table


def _table_path(settings: Settings, point: OperatingPoint) -> Path:
    name = settings.models.pack if point == DEFAULT_POINT else f"{settings.models.pack}.{point.key}"
    return settings.matching.calibration_dir / f"{name}.json"


def calibrate_command(point: OperatingPoint) -> str:
    """The command that measures a table for ``point`` on the development set."""
    return (f"VERIFIER_MODELS__RUNTIME={point.runtime} VERIFIER_MODELS__PRECISION={point.precision} "
            "verifier eval ../shared/data/lfw-dev --calibrate")


def operating_point(settings: Settings) -> OperatingPoint:
    """The runtime and precision the pack's models run at: the fastest the
    settings allow that has a calibration table (the named table's own point
    where ``matching.calibration_file`` is set), else the last allowed, whose
    missing table then stops the start (unless serving uncalibrated on purpose)."""
    cuda = providers_for(settings.models.execution_provider)[0] == CUDA
    candidates = candidate_points(settings.models, cuda)
    if settings.matching.calibration_file is not None and settings.matching.calibration_file.exists():
        named = load_table(settings.matching.calibration_file).point
        if named not in candidates:
            raise ModelPackError(f"calibration table {settings.matching.calibration_file} (matching.calibration_file) "
                                 f"was measured at {named}; the settings allow {', '.join(map(str, candidates))}")
        return named
    return next((point for point in candidates if _table_path(settings, point).exists()), candidates[-1])


def calibration_path(settings: Settings, point: OperatingPoint | None = None) -> Path:
    """The table for the pack at ``point`` (by default the one the settings resolve to)."""
    return settings.matching.calibration_file or _table_path(settings, point or operating_point(settings))


def serving_threshold(settings: Settings, model_id: str, point: OperatingPoint | None = None) -> Threshold:
    """The threshold the service decides at: from the pack's calibration table. Where
    the pack has none, the configured default, but only with
    ``matching.allow_uncalibrated`` and never below :data:`UNCALIBRATED_FLOOR`
    (a named table that is absent is always an error). A site table
    (``matching.site_calibration_file``) can only raise it."""
    from verifier.site_calibration import with_site_fmr

    point = point or operating_point(settings)
    return with_site_fmr(settings, model_id, point, _pack_threshold(settings, model_id, point))


def _pack_threshold(settings: Settings, model_id: str, point: OperatingPoint) -> Threshold:
    path = calibration_path(settings, point)
    if not path.exists():
        if settings.matching.calibration_file is not None:
            raise ModelPackError(f"calibration table {path} (matching.calibration_file) does not exist")
        if not settings.matching.allow_uncalibrated:
            raise ModelPackError(
                f"no calibration table {path} for pack {settings.models.pack!r} at {point}: "
                f"run `{calibrate_command(point)}`, or serve uncalibrated on purpose with "
                "VERIFIER_MATCHING__ALLOW_UNCALIBRATED=true "
                f"(at matching.default_threshold, at least {UNCALIBRATED_FLOOR})"
            )
        _require_floor("matching.default_threshold", settings.matching.default_threshold, path)
        log.warning("no calibration table at %s; deciding at the configured default threshold %.4f "
                    "(matching.allow_uncalibrated)", path, settings.matching.default_threshold)
        return default_threshold(settings.matching)
    return _served_table(settings, model_id, path, point).threshold_for(settings.matching.target_fmr, path)


def _require_floor(setting: str, value: float, path: Path) -> None:
    """Refuse to serve an unmeasured threshold laxer than the floor."""
    if value < UNCALIBRATED_FLOOR:
        raise ModelPackError(
            f"{setting} = {value!r} would be served without a measured threshold ({path} has none): "
            f"uncalibrated thresholds must be at least {UNCALIBRATED_FLOOR} (README, Security)"
        )


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


def identification_thresholds(
    settings: Settings, model_id: str, point: OperatingPoint | None = None
) -> IdentificationThresholds:
    """The watch-list's thresholds: the 1:N rows of the pack's calibration table,
    or the configured threshold where the table has none (or there is no table);
    a site table's 1:N rows can only raise them."""
    from verifier.site_calibration import with_site_identification

    point = point or operating_point(settings)
    return with_site_identification(settings, model_id, point, _pack_identification(settings, model_id, point))


def _pack_identification(settings: Settings, model_id: str, point: OperatingPoint) -> IdentificationThresholds:
    fallback = configured_identification_threshold(settings.watchlist)
    path = calibration_path(settings, point)
    if not path.exists():
        if settings.matching.calibration_file is not None:
            raise ModelPackError(f"calibration table {path} (matching.calibration_file) does not exist")
        if not settings.matching.allow_uncalibrated:
            raise ModelPackError(f"no calibration table {path} for pack {settings.models.pack!r}: run "
                                 "`verifier eval --calibrate`, or set VERIFIER_MATCHING__ALLOW_UNCALIBRATED=true")
        _require_floor("watchlist.threshold", fallback.value, path)
        return IdentificationThresholds.fixed(fallback)
    table = _served_table(settings, model_id, path, point)
    if not table.identification:
        _require_floor("watchlist.threshold", fallback.value, path)
    return IdentificationThresholds.from_table(table, path, settings.watchlist.target_fpir, fallback)


def check_utility_calibration(calibration: "UtilityCalibration | None", path: Path, points: int) -> None:
    """Refuse a utility table (``<pack>-quality.json``) whose norm quantiles are
    not ``points`` finite, positive, non-decreasing numbers per model: the
    quality policy's LOW_UTILITY decides by them, and a NaN quantile makes every
    percentile NaN, which no bound refuses. Logs the table's sha256."""
    if calibration is None:
        return
    if isinstance(calibration.images, bool) or not isinstance(calibration.images, int) or calibration.images < 1:
        raise ModelPackError(f"utility table {path}: key images = {calibration.images!r} is not a positive number")
    for model_id, quantiles in calibration.members.items():
        key = f"members.{model_id}"
        if not isinstance(quantiles, list) or len(quantiles) != points:
            raise ModelPackError(f"utility table {path}: key {key} is not a list of {points} quantiles")
        for i, value in enumerate(quantiles):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0 or (i and value < quantiles[i - 1]):
                raise ModelPackError(f"utility table {path}: key {key}[{i}] = {value!r} is not a finite positive "
                                     "norm at or above the quantile before it")
    log.info("utility table %s sha256 %s (measured %s on %s)", path, hashlib.sha256(path.read_bytes()).hexdigest(),
             calibration.created, calibration.dataset)
