"""`verifier eval`: measure the pipeline on a labeled set, write the report, and
optionally the calibration table the server decides by.

With ``--calibrate`` the table gets 1:1 rows (FMR to threshold, from every
comparison of the set) and 1:N rows (FPIR and gallery size to threshold, from
real searches of real watch-lists: see :func:`verifier.evaluation.watchlist_accuracy.calibrate`).
The 1:N searches need every image of each person, so an LFW-style set is
searched as the folder set of its ``images/`` (all its images, not only those
its pairs name).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from verifier.calibration import (
    CalibrationRow,
    CalibrationTable,
    IdentificationRow,
    calibration_path,
    scored_models,
    serving_threshold,
    template_settings,
    write_table,
)
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.evaluation.conditions import CONDITIONS, ConditionError, condition
from verifier.evaluation.datasets import Layout
from verifier.imaging import ImageUse
from verifier.pipeline import Selection

if TYPE_CHECKING:
    from verifier.evaluation.datasets import LabeledSet
    from verifier.evaluation.evaluate import EvaluationResult

# Beside an LFW-style pairs.txt: published five-point landmarks, used by --landmarks without a value.
LANDMARKS_FILE = "landmarks-5pt.txt"
EXIT_OK = 0
EXIT_ERROR = 2


def _finite_score(text: str) -> float:
    """A score to measure at: a finite number (NaN would count nothing and look like a result)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite score: {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="accuracy on a labeled set in ISO/IEC 19795-1 terms; --calibrate writes the threshold table"
    )
    parser.add_argument("dataset", type=Path, help="LFW-style folder (pairs.txt + images/) or one folder per identity")
    parser.add_argument("--layout", choices=[layout.value for layout in Layout],
                        help="default: lfw when the folder holds pairs.txt, else folders")
    parser.add_argument("--name", help="the set's name in the report (default: its folder name)")
    parser.add_argument("--output", type=Path, help="report folder (default: evaluation.output_dir/<name>-<pack>)")
    parser.add_argument("--pack", help="model pack to evaluate (default: models.pack)")
    parser.add_argument("--face", choices=[s.value for s in Selection],
                        help="face taken from an image with several: default centre (the labelled face of LFW)")
    parser.add_argument("--landmarks", type=Path, nargs="?", const=Path(LANDMARKS_FILE),
                        help=f"align on published landmarks to measure the embedder alone (default file: {LANDMARKS_FILE} "
                        "in the data set)")
    parser.add_argument("--calibrate", action="store_true",
                        help="write the pack's calibration table (matching.calibration_dir/<pack>.json)")
    parser.add_argument("--quality", action="store_true",
                        help="instead of accuracy: the error-versus-reject characteristic of every quality measure "
                        "on the set and derived conditions, and the pack's utility calibration "
                        "(matching.calibration_dir/<pack>-quality.json)")
    parser.add_argument("--conditions", default="original,downscaled,blurred,dark,degraded",
                        help="with --quality: derived conditions to measure, comma separated")
    parser.add_argument("--condition", choices=list(CONDITIONS),
                        help="evaluate a harder capture condition derived from the set (downscaled, greyscale, "
                        "blurred, compressed): reports the served threshold's FMR and FNMR on it")
    parser.add_argument("--at-threshold", type=_finite_score, action="append", default=[], metavar="SCORE",
                        help="also report FMR and FNMR at this score (repeatable): what a configured threshold, "
                        "such as registry.duplicate_threshold, means on the set")
    parser.set_defaults(handler=_eval)


def _quality(args: argparse.Namespace, settings: Settings, labeled: "LabeledSet") -> int:
    """ERC on the set and its derived conditions; writes the utility calibration first."""
    from verifier.evaluation.erc import CONDITIONS, collect, run_condition, utility_calibration, write_erc_report
    from verifier.face.quality import quality_path, write_calibration
    from verifier.pipeline import FaceEngine

    conditions = [c for c in args.conditions.split(",") if c]
    unknown = set(conditions) - set(CONDITIONS)
    if unknown or "original" not in conditions:
        print(f"error: conditions must include original and be among {sorted(CONDITIONS)}", file=sys.stderr)
        return EXIT_ERROR
    pack = settings.models.pack
    engine = FaceEngine.from_settings(settings)
    members = engine.embedder.utility_members
    collected = {c: collect(engine, labeled, c, settings.evaluation.cache_dir) for c in conditions}
    calibration = utility_calibration(collected["original"].norms, collected["original"].acquired, members, pack,
                                      labeled.name)
    path = settings.quality.calibration_file or quality_path(settings)
    write_calibration(calibration, path)
    threshold = serving_threshold(settings, engine.model_id, engine.operating_point)
    results = [run_condition(c, collected[c], labeled, calibration, members, threshold.value, settings)
               for c in conditions]
    out_dir = args.output or settings.evaluation.output_dir / f"quality-{labeled.name}-{pack}"
    report = write_erc_report(results, out_dir, {
        "dataset": labeled.name, "pack": pack, "model_id": engine.model_id, "threshold": threshold.value,
        "target_fmr": settings.matching.target_fmr, "utility_weight": settings.quality.utility_weight,
    })
    for result in results:
        cells = ", ".join(f"{m.measure} {100 * m.reduction:.0f} %" for m in result.measures[:3])
        cells += "; acquired only: " + ", ".join(f"{m.measure} {100 * m.reduction:.0f} %" for m in result.acquired_only)
        print(f"{result.condition}: FNMR {100 * result.fnmr:.2f} %; reduction at 10 % rejected: {cells}")
    print(f"utility calibration: {path}")
    print(f"report: {report}")
    return EXIT_OK


def _eval(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.evaluation.cache import embed_set
    from verifier.evaluation.datasets import DatasetError, load_set, read_landmarks
    from verifier.evaluation.evaluate import evaluate, served_point
    from verifier.matching import Threshold
    from verifier import extras
    from verifier.pipeline import FaceEngine

    # Checked before any work: the plots need the `eval` extra.
    write_report = extras.load("eval", "verifier.evaluation.report", "write_report", "`verifier eval` (its plots)")
    settings = settings.model_copy(deep=True)
    if args.pack:
        settings.models.pack = args.pack
    pack = settings.models.pack
    if args.calibrate and args.landmarks:
        print("error: --calibrate needs the served pipeline's own landmarks; drop --landmarks", file=sys.stderr)
        return EXIT_ERROR
    if args.condition and (args.calibrate or args.landmarks):
        print("error: --condition measures the served pipeline and threshold; drop --calibrate and --landmarks",
              file=sys.stderr)
        return EXIT_ERROR
    landmarks_file = None
    if args.landmarks is not None:
        landmarks_file = args.landmarks if args.landmarks.is_absolute() else args.dataset / args.landmarks
    derived = condition(args.condition) if args.condition else None
    try:
        labeled = load_set(args.dataset, Layout(args.layout) if args.layout else None, args.name)
        landmarks = read_landmarks(landmarks_file) if landmarks_file else None
        published = read_landmarks(args.dataset / LANDMARKS_FILE) if derived and derived.needs_landmarks else {}
    except (DatasetError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if args.quality:
        return _quality(args, settings, labeled)
    selection = Selection(args.face) if args.face else Selection.CENTRE
    alignment = "published" if landmarks is not None else "detected"
    started = time.perf_counter()
    engine = FaceEngine.from_settings(settings)
    served = None
    if not args.calibrate:
        try:
            served = serving_threshold(settings, engine.model_id, engine.operating_point)
        except ModelPackError as error:
            if derived:
                print(f"error: {error}", file=sys.stderr)
                return EXIT_ERROR
    transform = None
    if derived is not None:
        def transform(data: bytes, key: str) -> bytes:
            return derived.apply(data, published.get(key))
    try:
        templates = embed_set(
            engine, labeled, settings.evaluation.cache_dir, selection, landmarks_file, landmarks, transform,
            derived.use if derived is not None else ImageUse.LIVE,
        )
        # The clean set too (from the cache after the plain run), to compare one
        # degraded image against a good one.
        clean = embed_set(engine, labeled, settings.evaluation.cache_dir, selection) if derived else None
    except ConditionError as error:
        print(f"error: condition {derived.name if derived else ''}: {error}", file=sys.stderr)
        return EXIT_ERROR
    embedded = time.perf_counter()
    evaluated = evaluate(
        labeled, templates, settings.evaluation, pack, alignment, selection.value, served,
        derived.name if derived else "", clean,
    )
    measured = time.perf_counter()
    suffix = "-published-landmarks" if landmarks is not None else ""
    suffix += f"-{derived.name}" if derived else ""
    out_dir = args.output or settings.evaluation.output_dir / f"{labeled.name}-{pack}{suffix}"
    timings = {
        f"templates ({templates.embedded_now} embedded now)": embedded - started,
        "metrics": measured - embedded,
    }
    files = write_report(evaluated, out_dir, timings)
    result = evaluated.result
    named = f"{labeled.name}" + (f" ({derived.name}: {derived.description})" if derived else "")
    print(f"{named}: {len(labeled):,} images, {result.dataset.subjects:,} subjects; model {result.model_id}")
    acquisition = result.acquisition
    print(f"FTA {acquisition.failures}/{acquisition.attempts} = {100 * acquisition.rate:.2f} %"
          + (f" ({', '.join(f'{k} {n}' for k, n in acquisition.reasons.items())})" if acquisition.reasons else ""))
    for note in result.notes:
        print(f"note: {note}")
    verification = result.verification
    if verification is not None:
        print(f"EER {100 * verification.eer:.2f} %")
        for point in verification.points:
            interval = point.fnmr_bootstrap or point.fnmr_wilson
            print(f"FMR {point.target_fmr:g}: threshold {point.threshold:.4f}, FNMR {100 * point.fnmr:.2f} % "
                  f"[{100 * interval.low:.2f}, {100 * interval.high:.2f}] ({interval.method})")
    for label, at in (("", result.served), (" one side only (against the clean set)", result.served_mixed)):
        if at is not None:
            print(f"served threshold {at.threshold:.4f} (FMR {at.target_fmr:g}){label}: FMR measured {at.fmr:.2e} "
                  f"({at.false_matches:,} false matches), {at.fmr_ratio:.2f}x the target; "
                  f"FNMR {100 * at.fnmr:.2f} %, FRR with FTA {100 * at.frr:.2f} %")
    for score in args.at_threshold:
        if evaluated.comparisons is None:
            break
        at = served_point(evaluated.comparisons, Threshold(score, float("nan"), "--at-threshold"))
        print(f"at score {score:.4f}: FMR {at.fmr:.2e} ({at.false_matches:,} false matches of "
              f"{len(evaluated.comparisons.non_mated):,}), FNMR {100 * at.fnmr:.2f} % ({at.false_non_matches:,} of "
              f"{len(evaluated.comparisons.mated):,}), FRR with FTA {100 * at.frr:.2f} %")
    if result.protocol is not None:
        print(f"{len(result.protocol.accuracies)}-fold accuracy {100 * result.protocol.mean:.2f} % "
              f"± {100 * result.protocol.std:.2f}")
    if result.identification is not None:
        ident = result.identification
        fnir = ", ".join(f"FNIR {100 * p.fnir:.2f} % at FPIR {p.target_fpir:g}" for p in ident.points)
        print(f"1:N rank-1 {100 * ident.rank1:.2f} %; {fnir}")
    print(f"report: {files.markdown}")
    if args.calibrate:
        if verification is None:
            print("error: nothing to calibrate on: no 1:1 comparisons", file=sys.stderr)
            return EXIT_ERROR
        from verifier.evaluation.watchlist_accuracy import calibrate

        searched = labeled if labeled.layout is Layout.FOLDERS else load_set(labeled.image_root, Layout.FOLDERS)
        searched_templates = templates if searched is labeled else embed_set(
            engine, searched, settings.evaluation.cache_dir, selection)
        identification = calibrate(settings, engine, searched, searched_templates)
        for row in identification:
            print(f"1:N FPIR {row.target_fpir:g} at gallery {row.gallery_size}: threshold {row.threshold:.4f} "
                  f"({row.false_positives} of {row.non_mated_searches} non-mated searches hit), "
                  f"FNIR {100 * row.fnir:.2f} % of {row.mated_searches}")
        if not identification:
            print("no 1:N rows: the set has no person with two images and none with one "
                  "(the server keeps watchlist.threshold)")
        path = calibration_path(settings, engine.operating_point)
        table = _calibration_table(result, pack, tuple(identification), scored_models(settings))
        write_table(replace(table, runtime=engine.operating_point.runtime, precision=engine.operating_point.precision,
                            pipeline=template_settings(settings)), path)
        print(f"calibration table: {path}")
    return EXIT_OK


def _calibration_table(
    result: EvaluationResult, pack: str, identification: tuple[IdentificationRow, ...], models: dict[str, str]
) -> CalibrationTable:
    """The table of one run, with the prepared sha256 of the models measured (the
    server refuses it for any other)."""
    verification = result.verification
    if verification is None:
        raise ValueError("a calibration table needs 1:1 comparisons")
    rows = []
    for point in verification.points:
        interval = point.fnmr_bootstrap or point.fnmr_wilson
        rows.append(
            CalibrationRow(
                target_fmr=point.target_fmr,
                threshold=point.threshold,
                measured_fmr=point.fmr,
                false_matches=point.false_matches,
                fnmr=point.fnmr,
                fnmr_low=interval.low,
                fnmr_high=interval.high,
                fnmr_interval=f"{result.confidence:.0%} {interval.method}",
            )
        )
    return CalibrationTable(
        model_id=result.model_id,
        pack=pack,
        dataset=result.dataset.name,
        images=result.dataset.images,
        subjects=result.dataset.subjects,
        mated_comparisons=verification.mated_comparisons,
        non_mated_comparisons=verification.non_mated_comparisons,
        failure_to_acquire=result.acquisition.rate,
        alignment=result.alignment,
        created=datetime.now(UTC).date().isoformat(),
        rows=tuple(rows),
        models=models,
        identification=identification,
    )
