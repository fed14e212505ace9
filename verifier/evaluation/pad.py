"""`verifier pad-eval`: the pack's PAD model on a labelled folder, in ISO/IEC
30107-3 terms.

The folder holds one subfolder per class: ``bona_fide/`` for live people and
one per attack type (``print/``, ``screen/``, ``mask/`` ...), images anywhere
below each. ``--all-bona-fide`` takes every image of the folder as bona fide
(LFW dev's ``images/``: real photographs of real people, no attacks).

For each threshold (a live probability below it is called an attack):
BPCER, the share of bona fide presentations called attacks, and APCER per
attack type, the share of that type's presentations called live. An image in
which no face is found, or which the service would refuse, is counted apart
(not scored, with its reason) and never hidden.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from verifier.config import Settings
from verifier.errors import VerifierError
from verifier.evaluation.datasets import IMAGE_SUFFIXES
from verifier.face.liveness import LivenessModel
from verifier.pipeline import FaceEngine

BONA_FIDE = "bona_fide"
EXIT_OK = 0
EXIT_ERROR = 2
# Without a configured or given threshold, report at these live probabilities.
DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5)
# Besides the fixed thresholds: the thresholds at which these shares of bona
# fide presentations are called attacks (what an operating point costs).
BPCER_TARGETS = (0.01, 0.05)


@dataclass(frozen=True)
class ClassScores:
    """One class's live probabilities, and the images not scored (no face, or
    refused as the service would refuse them) with the reason."""

    name: str
    scores: list[float]
    not_acquired: list[str]


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    source: str
    bpcer: float | None
    apcer: dict[str, float]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def classes_of(folder: Path, all_bona_fide: bool) -> dict[str, list[Path]]:
    """Class name -> its images; raises ValueError on a folder that labels nothing."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if all_bona_fide:
        classes = {BONA_FIDE: _images(folder)}
    else:
        classes = {sub.name: _images(sub) for sub in sorted(folder.iterdir()) if sub.is_dir()}
    classes = {name: images for name, images in classes.items() if images}
    if not classes:
        raise ValueError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in class folders: "
                         f"expected {BONA_FIDE}/ and one folder per attack type, or --all-bona-fide")
    return classes


def score_class(engine: FaceEngine, liveness: LivenessModel, name: str, images: list[Path]) -> ClassScores:
    """The live probability by ``liveness`` of the largest face ``engine`` finds in each image."""
    crops, missed = [], []
    for path in tqdm(images, desc=f"pad {name}", unit="image"):
        try:
            face = engine.analyse_all(path.read_bytes(), liveness=True).faces[0]
        except VerifierError as error:  # no face, or an image the service would refuse
            missed.append(f"{path.name}: {error.reason.value}")
            continue
        crops.append(face.liveness_crop)
    batch = engine.settings.evaluation.batch_size
    scores = [float(s) for start in range(0, len(crops), batch)
              for s in liveness.live_probability(crops[start:start + batch])]
    return ClassScores(name, scores, missed)


def operating_points(classes: list[ClassScores], thresholds: list[tuple[float, str]]) -> list[OperatingPoint]:
    """BPCER and APCER per attack type at each threshold, plus the thresholds
    that meet each BPCER target where there are bona fide scores."""
    bona = next((np.asarray(c.scores) for c in classes if c.name == BONA_FIDE and c.scores), None)
    points = list(thresholds)
    if bona is not None:
        for target in BPCER_TARGETS:
            points.append((float(np.quantile(bona, target, method="lower")), f"BPCER {100 * target:g} %"))
    out = []
    for threshold, source in points:
        bpcer = None if bona is None else float(np.mean(bona < threshold))
        apcer = {c.name: float(np.mean(np.asarray(c.scores) >= threshold))
                 for c in classes if c.name != BONA_FIDE and c.scores}
        out.append(OperatingPoint(threshold, source, bpcer, apcer))
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pad-eval", help="BPCER and APCER per attack type of the pack's PAD model on a labelled folder")
    parser.add_argument("folder", type=Path,
                        help=f"one subfolder per class: {BONA_FIDE}/ and one per attack type")
    parser.add_argument("--all-bona-fide", action="store_true",
                        help="every image of the folder is a bona fide presentation (a set without attacks)")
    parser.add_argument("--pack", help="model pack (default: models.pack); it must name a liveness model")
    parser.add_argument("--threshold", type=float, action="append", default=[],
                        help="live probability below which a presentation is called an attack (repeatable; "
                        "default: gate.pad_threshold, or " + ", ".join(map(str, DEFAULT_THRESHOLDS)) + ")")
    parser.add_argument("--output", type=Path, help="write the scores and figures as JSON here")
    parser.set_defaults(handler=_pad_eval)


def _pad_eval(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.model_copy(deep=True)
    if args.pack:
        settings.models.pack = args.pack
    if any(not 0.0 < t < 1.0 for t in args.threshold):
        print("error: a threshold is a live probability strictly between 0 and 1", file=sys.stderr)
        return EXIT_ERROR
    try:
        folders = classes_of(args.folder, args.all_bona_fide)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    engine = FaceEngine.from_settings(settings)
    liveness = engine.liveness
    if liveness is None:
        print(f"error: pack {settings.models.pack!r} names no liveness model", file=sys.stderr)
        return EXIT_ERROR
    if args.threshold:
        thresholds = [(t, "given") for t in args.threshold]
    elif settings.gate.pad_threshold is not None:
        thresholds = [(settings.gate.pad_threshold, "gate.pad_threshold")]
    else:
        thresholds = [(t, "fixed") for t in DEFAULT_THRESHOLDS]
    classes = [score_class(engine, liveness, name, images) for name, images in folders.items()]
    points = operating_points(classes, thresholds)
    print(f"PAD model {liveness.model_id}, pack {settings.models.pack}: {args.folder}")
    for c in classes:
        print(f"  {c.name}: {len(c.scores)} scored, {len(c.not_acquired)} without a face")
    for p in points:
        bpcer = "-" if p.bpcer is None else f"{100 * p.bpcer:.2f} %"
        apcer = ", ".join(f"{name} {100 * value:.2f} %" for name, value in p.apcer.items()) or "no attack images"
        print(f"threshold {p.threshold:.4f} ({p.source}): BPCER {bpcer}; APCER {apcer}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "model_id": liveness.model_id, "pack": settings.models.pack, "folder": str(args.folder),
            "classes": [asdict(c) for c in classes], "operating_points": [asdict(p) for p in points],
        }, indent=1) + "\n")
    return EXIT_OK
