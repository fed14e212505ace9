"""Site tables: thresholds measured on a site's own captures, only ever stricter.

A pack's table (verifier.calibration) is measured on a development set; a
site's captures (one studio's small grey photos, one gate's lighting) can
put unrelated faces closer together, so the pack's threshold lets through
more than its target FMR there. A false-match rate needs only non-mated
comparisons, which every site has in quantity: `verifier calibration site`
(verifier.evaluation.site) scores every pair of a folder of one capture per
traveller and writes, for each target FMR (and FPIR with a gallery size), the
lowest threshold at which a one-sided Clopper-Pearson upper bound on the rate,
from the false matches left among those comparisons, is at or below the target.

The server reads the table named by ``matching.site_calibration_file`` and
decides at the stricter of the pack's and the site's threshold, never the
laxer: a site table can only raise a threshold. Like a pack's table it is tied
to the pack, the prepared sha256 of the models and the operating point, and
every number is checked at start; a fault stops the start naming the key.

A row the comparisons cannot support (fewer comparisons than the target
needs: with none false, n comparisons bound the FMR at 1 - (1 - c)^(1/n),
about 3/n at 95 %) holds the threshold above every score seen: it is still
applied, as a floor, and the threshold source says the target is not
supported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from verifier.calibration import (
    IdentificationThreshold,
    IdentificationThresholds,
    _check_number,
    check_order_and_models,
    require_models,
    scored_models,
)
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.matching import Threshold
from verifier.modelzoo.runtime import OperatingPoint

log = logging.getLogger(__name__)

SITE_SCHEMA = 1
SITE_KIND = "site"


@dataclass(frozen=True)
class SiteRow:
    """1:1: the lowest threshold whose upper bound on FMR is at or below the target."""

    target_fmr: float
    threshold: float
    # Among the table's non-mated comparisons, at this threshold.
    false_matches: int
    fmr_upper: float
    # fmr_upper <= target_fmr; else the threshold sits above every score seen.
    supported: bool


@dataclass(frozen=True)
class SiteIdentificationRow:
    """1:N: searches of a gallery of ``gallery_size`` of the site's captures by the others."""

    target_fpir: float
    gallery_size: int
    threshold: float
    false_positives: int
    searches: int
    fpir_upper: float
    supported: bool


@dataclass(frozen=True)
class SiteTable:
    site: str
    # Where the scores came from, in words (a folder and what was taken from it).
    source: str
    pack: str
    model_id: str
    models: dict[str, str]
    runtime: str
    precision: str
    created: str
    # Captures offered, templates used, and why the others were not.
    images: int
    acquired: int
    failures: dict[str, int]
    # Captures left out as a second capture of a traveller already in (score at or above duplicate_score).
    near_duplicates: int
    duplicate_score: float
    non_mated_comparisons: int
    # The lowest FMR the comparisons can support at all: the bound with no false match.
    lowest_supported_fmr: float
    # One-sided confidence of the upper bounds.
    confidence: float
    rows: tuple[SiteRow, ...]
    identification: tuple[SiteIdentificationRow, ...] = ()
    schema: int = SITE_SCHEMA
    kind: str = SITE_KIND

    @property
    def point(self) -> OperatingPoint:
        return OperatingPoint(self.runtime, self.precision)

    def row_for(self, target_fmr: float) -> SiteRow | None:
        """The row with the largest FMR at or below the target (never a laxer one)."""
        eligible = [row for row in self.rows if row.target_fmr <= target_fmr]
        return max(eligible, key=lambda row: row.target_fmr) if eligible else None

    def describe(self, path: Path) -> str:
        return (f"site calibration {path.name} ({self.site}, {self.acquired:,} captures, "
                f"{self.non_mated_comparisons:,} non-mated comparisons, {self.created})")


def _whole(path: Path, key: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ModelPackError(f"site calibration table {path}: key {key} = {value!r} is not a whole number >= {low}")


def _flag(path: Path, key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ModelPackError(f"site calibration table {path}: key {key} = {value!r} is not true or false")


def check_site_values(table: SiteTable, path: Path) -> None:
    """Every number in range, counts whole and consistent, thresholds stricter as targets get stricter."""
    _check_number(path, "confidence", table.confidence, 0.5, 1.0)
    _check_number(path, "duplicate_score", table.duplicate_score, -1.0, 1.0)
    _check_number(path, "lowest_supported_fmr", table.lowest_supported_fmr, 0.0, 1.0, open_low=True)
    for key in ("images", "acquired", "near_duplicates", "non_mated_comparisons"):
        _whole(path, key, getattr(table, key), 0)
    if table.acquired > table.images or table.non_mated_comparisons < 1:
        raise ModelPackError(f"site calibration table {path}: keys images, acquired and non_mated_comparisons "
                             "do not describe a set of comparisons")
    if not isinstance(table.failures, dict):
        raise ModelPackError(f"site calibration table {path}: key failures is not a mapping of reason to count")
    for reason, count in table.failures.items():
        _whole(path, f"failures.{reason}", count, 0)
    for i, row in enumerate(table.rows):
        key = f"rows[{i}]"
        _check_number(path, f"{key}.target_fmr", row.target_fmr, 0.0, 1.0, open_low=True)
        _check_number(path, f"{key}.threshold", row.threshold, -1.0, 1.0)
        _check_number(path, f"{key}.fmr_upper", row.fmr_upper, 0.0, 1.0)
        _whole(path, f"{key}.false_matches", row.false_matches, 0)
        _flag(path, f"{key}.supported", row.supported)
        if row.false_matches > table.non_mated_comparisons:
            raise ModelPackError(f"site calibration table {path}: key {key}.false_matches exceeds the comparisons")
    for i, ident in enumerate(table.identification):
        key = f"identification[{i}]"
        _check_number(path, f"{key}.target_fpir", ident.target_fpir, 0.0, 1.0, open_low=True)
        _check_number(path, f"{key}.threshold", ident.threshold, -1.0, 1.0)
        _check_number(path, f"{key}.fpir_upper", ident.fpir_upper, 0.0, 1.0)
        _whole(path, f"{key}.gallery_size", ident.gallery_size, 1)
        _whole(path, f"{key}.searches", ident.searches, 1)
        _whole(path, f"{key}.false_positives", ident.false_positives, 0)
        _flag(path, f"{key}.supported", ident.supported)
        if ident.false_positives > ident.searches:
            raise ModelPackError(f"site calibration table {path}: key {key}.false_positives exceeds its searches")
    check_order_and_models(table.rows, table.models, path)


def write_site_table(table: SiteTable, path: Path) -> None:
    check_site_values(table, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(table), indent=2) + "\n")


def load_site_table(path: Path) -> SiteTable:
    """The site table at ``path``, every value checked; any fault is a ModelPackError naming the key."""
    try:
        raw = json.loads(path.read_bytes())
        if raw.get("kind") != SITE_KIND or raw.get("schema") != SITE_SCHEMA:
            raise ModelPackError(f"{path} is not a site calibration table (kind {raw.get('kind')!r}, schema "
                                 f"{raw.get('schema')!r}; expected {SITE_KIND!r}, {SITE_SCHEMA}): "
                                 "`verifier calibration site` writes one")
        if not isinstance(raw.get("models"), dict) or not raw["models"]:
            raise ModelPackError(f"site calibration table {path}: key models is missing")
        rows = tuple(SiteRow(**row) for row in raw.pop("rows"))
        identification = tuple(SiteIdentificationRow(**row) for row in raw.pop("identification", ()))
        table = SiteTable(**raw, rows=rows, identification=identification)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelPackError(f"cannot read site calibration table {path}: {exc}") from exc
    if not table.rows:
        raise ModelPackError(f"site calibration table {path} has no rows")
    check_site_values(table, path)
    return table


def served_site_table(settings: Settings, model_id: str, point: OperatingPoint) -> tuple[SiteTable, Path] | None:
    """The configured site table, refused unless made for this pack, its models and operating point."""
    path = settings.matching.site_calibration_file
    if path is None:
        return None
    if not path.exists():
        raise ModelPackError(f"site calibration table {path} (matching.site_calibration_file) does not exist")
    table = load_site_table(path)
    if table.pack != settings.models.pack or table.model_id != model_id:
        raise ModelPackError(f"site calibration table {path} was made for pack {table.pack!r} ({table.model_id}), "
                             f"the service runs {settings.models.pack!r} ({model_id}): run `verifier calibration "
                             "site` again for this pack")
    require_models(table.models, scored_models(settings), path, "run `verifier calibration site` for these models")
    if table.point != point:
        raise ModelPackError(f"site calibration table {path} was measured at {table.point}, the models run at "
                             f"{point}: run `verifier calibration site` at this operating point")
    log.info("site calibration table %s sha256 %s (%s, %d non-mated comparisons, %s)", path,
             hashlib.sha256(path.read_bytes()).hexdigest(), table.site, table.non_mated_comparisons, table.created)
    return table, path


def _support(supported: bool, upper: float, rate: str) -> str:
    return (f"{rate} upper bound {upper:.2g}" if supported
            else f"target not supported by so few comparisons ({rate} bound {upper:.2g}): a floor")


def with_site_fmr(settings: Settings, model_id: str, point: OperatingPoint, pack: Threshold) -> Threshold:
    """The stricter of the pack's threshold and the site table's row for the served target FMR."""
    served = served_site_table(settings, model_id, point)
    if served is None:
        return pack
    table, path = served
    row = table.row_for(settings.matching.target_fmr) or max(table.rows, key=lambda r: r.threshold)
    site = (f"{table.describe(path)}: FMR {row.target_fmr:g} at {row.threshold:.4f}, "
            f"{row.false_matches} false matches, {_support(row.supported, row.fmr_upper, 'FMR')}")
    if row.threshold <= pack.value:
        return Threshold(pack.value, pack.false_match_rate, f"{pack.source}; {site}: not stricter, pack's kept")
    log.warning("site calibration raises the 1:1 threshold from %.4f to %.4f (%s)", pack.value, row.threshold, path)
    return Threshold(row.threshold, pack.false_match_rate,
                     f"{site}: raised from the pack's {pack.value:.4f} ({pack.source})")


class SiteIdentificationThresholds(IdentificationThresholds):
    """The pack's 1:N thresholds, each raised to the site's where the site's is stricter.

    For a search of ``size`` templates the site row is chosen as the pack's is:
    the smallest site gallery at or above ``size``, else the largest."""

    def __init__(self, pack: IdentificationThresholds, table: SiteTable, path: Path, target_fpir: float) -> None:
        super().__init__((), pack.for_gallery(1))
        self._pack = pack
        eligible = [row for row in table.identification if row.target_fpir <= target_fpir]
        chosen = max((row.target_fpir for row in eligible), default=None)
        self._site = sorted((row for row in eligible if row.target_fpir == chosen), key=lambda r: r.gallery_size)
        self._describe = table.describe(path)

    @property
    def calibrated(self) -> bool:
        return self._pack.calibrated or bool(self._site)

    def for_gallery(self, size: int) -> IdentificationThreshold:
        pack = self._pack.for_gallery(size)
        if not self._site:
            return pack
        row = next((row for row in self._site if row.gallery_size >= size), self._site[-1])
        site = (f"{self._describe}: FPIR {row.target_fpir:g} on a gallery of {row.gallery_size} at "
                f"{row.threshold:.4f}, {row.false_positives} of {row.searches} searches hit, "
                f"{_support(row.supported, row.fpir_upper, 'FPIR')}")
        if row.threshold <= pack.value:
            return IdentificationThreshold(pack.value, pack.fpir, f"{pack.source}; {site}: not stricter, pack's kept")
        return IdentificationThreshold(row.threshold, pack.fpir,
                                       f"{site}: raised from the pack's {pack.value:.4f} ({pack.source})")


def with_site_identification(
    settings: Settings, model_id: str, point: OperatingPoint, pack: IdentificationThresholds
) -> IdentificationThresholds:
    served = served_site_table(settings, model_id, point)
    if served is None or not served[0].identification:
        return pack
    return SiteIdentificationThresholds(pack, served[0], served[1], settings.watchlist.target_fpir)
