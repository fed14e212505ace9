"""`verifier calibration site`: a site table from a folder of one capture per traveller.

Embeds every capture through the served pipeline (templates cached as for
`verifier eval`), scores every pair, and writes the site table the server
combines with the pack's (matching.site_calibration_file; the stricter
threshold wins). See verifier.evaluation.site for the bound and the checks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from verifier.config import Settings
from verifier.bounds import lowest_supported
from verifier.evaluation.site import MIN_CAPTURES, STORE_SOURCES, SiteCalibrationError

if TYPE_CHECKING:
    from verifier.modelzoo.runtime import OperatingPoint
    from verifier.site_calibration import SiteTable

EXIT_OK = 0
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("calibration", help="site calibration from a site's own non-mated captures")
    commands = parser.add_subparsers(dest="calibration_command", required=True)
    site = commands.add_parser(
        "site", help="thresholds from a folder of one capture per traveller (every pair non-mated); writes a "
        "site table the server applies where it is stricter than the pack's")
    site.add_argument("folder", type=Path, nargs="?",
                      help="one capture per traveller, every file directly in the folder")
    site.add_argument("--from-store", choices=STORE_SOURCES,
                      help="instead of a folder: one stored template per watch-list subject or per registered "
                      "traveller, from the configured store, read only (no image is read, nothing is kept but counts)")
    site.add_argument("--site", help="the site's name in the table (default: the folder's name)")
    site.add_argument("--output", type=Path,
                      help="the table (default: data_dir/site-calibration/<pack>.<runtime>-<precision>.json)")
    site.add_argument("--duplicate-score", type=float,
                      help="two captures scoring at or above this are taken as one traveller twice "
                      "(default: registry.duplicate_threshold)")
    site.add_argument("--drop-near-duplicates", action="store_true",
                      help="leave out the later capture of each such pair instead of stopping")
    site.add_argument("--no-cache", action="store_true",
                      help="keep the captures' templates only while the command runs (by default they join the "
                      "evaluation cache, evaluation.cache_dir, like any evaluated set's)")
    site.add_argument("--skip-unreadable", action="store_true",
                      help="leave out files that are not images the service decodes instead of stopping")
    site.set_defaults(handler=_site)
    status = commands.add_parser(
        "status", help="live FMR and FPIR at the served thresholds from the non-mated outcomes a server counted "
        "(matching.drift_path); exit 1 where one is above matching.drift_factor x its target with confidence")
    status.add_argument("--file", type=Path, help="the counts (default: data_dir/matching.drift_path)")
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.bounds import comparisons_to_detect
    from verifier.calibration import serving_threshold
    from verifier.drift import VERIFICATION, DriftMonitor, at_threshold
    from verifier.errors import ModelPackError
    from verifier.modelzoo.manifest import load_manifest

    configured = settings.matching.drift_path
    path = args.file or (None if configured is None else settings.data_dir / configured)
    if path is None or not path.exists():
        print(f"error: no drift counts at {path} (a server saves them every 500 outcomes; "
              "matching.drift_path None keeps them in memory only)", file=sys.stderr)
        return EXIT_ERROR
    monitor = DriftMonitor.read(path, settings.matching.drift_factor, settings.evaluation.confidence)
    statuses = monitor.status()
    for status in statuses:
        print(status.describe())
        if status.target:
            needed = comparisons_to_detect(status.target, 3.0, status.factor, monitor.confidence, 0.9)
            print(f"  a live rate 3x the target is seen with 90 % probability after about {needed:,} "
                  f"({'reached' if status.observed >= needed else f'{status.observed:,} so far'})")
    counted = next(s for s in statuses if s.stream == VERIFICATION)
    histogram = monitor.histogram(VERIFICATION)
    model_id = load_manifest(settings.models.manifest).template_spec(settings.models.pack).model_id
    for target in settings.evaluation.fmr_targets if counted.observed else ():
        local = settings.model_copy(deep=True)
        local.matching.target_fmr = target
        try:
            threshold = serving_threshold(local, model_id)
        except ModelPackError:
            continue
        above = at_threshold(histogram, threshold.value)
        print(f"  at the threshold served for FMR {target:g} ({threshold.value:.4f}): at most {above:,} of "
              f"{counted.observed:,} ({above / counted.observed:.2e}; bins of 0.005, rounded up)")
    print(f"counts: {path}")
    return 1 if any(status.alarm for status in statuses) else EXIT_OK


def _site(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from verifier.calibration import operating_point, scored_models
    from verifier.evaluation.cache import embed_set
    from verifier.evaluation.site import capture_set, fmr_rows, fpir_rows, keep_captures, stored_templates
    from verifier.modelzoo.manifest import load_manifest
    from verifier.pipeline import FaceEngine
    from verifier.site_calibration import SiteTable, write_site_table

    duplicate_score = args.duplicate_score if args.duplicate_score is not None \
        else settings.registry.duplicate_threshold
    evaluation = settings.evaluation
    if (args.folder is None) == (args.from_store is None):
        print("error: name a folder of captures or --from-store, one of them", file=sys.stderr)
        return EXIT_ERROR
    try:
        if args.folder is not None:
            labeled = capture_set(args.folder)
            engine = FaceEngine.from_settings(settings)
            model_id, point = engine.model_id, engine.operating_point
            with tempfile.TemporaryDirectory(prefix="site-templates-") as scratch:
                templates = embed_set(engine, labeled, Path(scratch) if args.no_cache else evaluation.cache_dir)
            keys, vectors, acquired, failures = labeled.keys, templates.vectors, templates.acquired, templates.failures
            name, where = labeled.name, f"folder {args.folder.resolve()}: {len(keys):,} captures, one per traveller"
        else:
            spec = load_manifest(settings.models.manifest).template_spec(settings.models.pack)
            model_id, point = spec.model_id, operating_point(settings)
            keys, vectors, path = stored_templates(settings, args.from_store, spec)
            acquired, failures = np.ones(len(keys), bool), {}
            name, where = args.from_store, f"{args.from_store} of store {path}: {len(keys):,}, one template each"
        captures = keep_captures(keys, vectors, acquired, failures, duplicate_score, args.drop_near_duplicates,
                                 args.skip_unreadable, evaluation.chunk_rows)
        if len(captures.keys) < MIN_CAPTURES:
            raise SiteCalibrationError(f"{len(captures.keys)} of {len(keys)} captures gave a template "
                                       f"({captures.failures}); at least {MIN_CAPTURES} are needed")
    except SiteCalibrationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    rows, comparisons = fmr_rows(captures.vectors, evaluation.fmr_targets, evaluation.confidence,
                                 evaluation.chunk_rows)
    identification = fpir_rows(captures.vectors, evaluation.fpir_targets, evaluation.identification_gallery_sizes,
                               evaluation.confidence, evaluation.bootstrap_seed)
    table = SiteTable(
        site=args.site or name,
        source=(f"{where}; {len(captures.unreadable)} unreadable and {len(captures.duplicates)} near-duplicates "
                "left out"),
        pack=settings.models.pack, model_id=model_id, models=scored_models(settings),
        runtime=point.runtime, precision=point.precision, created=datetime.now(UTC).date().isoformat(),
        images=len(keys), acquired=len(captures.keys), failures=captures.failures,
        near_duplicates=len(captures.duplicates), duplicate_score=duplicate_score,
        non_mated_comparisons=comparisons, lowest_supported_fmr=lowest_supported(comparisons, evaluation.confidence),
        confidence=evaluation.confidence, rows=tuple(rows), identification=tuple(identification),
    )
    path = args.output or settings.data_dir / "site-calibration" / f"{settings.models.pack}.{point.key}.json"
    write_site_table(table, path)
    _report(table, settings, model_id, point, path)
    return EXIT_OK


def _report(table: "SiteTable", settings: Settings, model_id: str, point: "OperatingPoint", path: Path) -> None:
    from verifier.calibration import identification_thresholds, serving_threshold

    pack_settings = settings.model_copy(deep=True)
    pack_settings.matching.site_calibration_file = None
    print(f"{table.site}: {table.acquired:,} of {table.images:,} captures used"
          + (f" (not acquired: {', '.join(f'{r} {n}' for r, n in table.failures.items())})" if table.failures else "")
          + (f"; {table.near_duplicates} near-duplicates left out" if table.near_duplicates else ""))
    print(f"{table.non_mated_comparisons:,} non-mated comparisons: they support FMR down to "
          f"{table.lowest_supported_fmr:.2g} ({100 * table.confidence:.0f} % one-sided upper bound with no false "
          "match; about 3 / comparisons)")
    served_row = table.row_for(settings.matching.target_fmr) or max(table.rows, key=lambda r: r.threshold)
    for row in table.rows:
        state = (f"{row.false_matches} false matches left, FMR upper bound {row.fmr_upper:.2g}" if row.supported
                 else "NOT SUPPORTED: above every score seen, applied only as a floor")
        served = " <- matching.target_fmr" if row is served_row else ""
        print(f"FMR {row.target_fmr:g}: threshold {row.threshold:.4f} ({state}){served}")
    pack = serving_threshold(pack_settings, model_id, point)
    print(f"pack's threshold at FMR {pack.false_match_rate:g}: {pack.value:.4f}; served with this table: "
          f"{max(pack.value, served_row.threshold):.4f}")
    pack_ident = identification_thresholds(pack_settings, model_id, point)
    for ident in table.identification:
        print(f"1:N FPIR {ident.target_fpir:g}, gallery {ident.gallery_size}: threshold {ident.threshold:.4f} "
              f"({ident.false_positives} of {ident.searches} searches hit"
              + ("" if ident.supported else ", NOT SUPPORTED: a floor")
              + f"); pack's {pack_ident.for_gallery(ident.gallery_size).value:.4f}")
    print(f"site table: {path}\nserve with VERIFIER_MATCHING__SITE_CALIBRATION_FILE={path}")
