"""Labeled evaluation sets, read from either of two layouts into one shape.

- LFW style: ``pairs.txt`` (header ``<folds><TAB><pairs per class>``, then per fold
  that many mated lines ``name i j`` and as many non-mated ``name1 i name2 j``)
  and ``images/<name>/<name>_<i:04d>.jpg``. The images are those the pairs name.
- Folders: ``<root>/<identity>/<image>``, every image of every identity.

Subjects are numbered in sorted name order and images in sorted path order, so a
set reads the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

PAIRS_FILE = "pairs.txt"
IMAGES_DIR = "images"
# File endings of the formats the service decodes (JPEG, PNG, JPEG 2000).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".jp2", ".j2k"})


class DatasetError(Exception):
    """An evaluation set that cannot be read as its layout says."""


class Layout(str, Enum):
    LFW = "lfw"
    FOLDERS = "folders"


@dataclass(frozen=True)
class Pairs:
    """A protocol's listed pairs, as indices into the set's images."""

    first: np.ndarray
    second: np.ndarray
    mated: np.ndarray
    fold: np.ndarray

    @property
    def folds(self) -> int:
        return int(self.fold.max()) + 1 if len(self.fold) else 0


@dataclass(frozen=True)
class LabeledSet:
    name: str
    root: Path
    layout: Layout
    image_root: Path
    # Image paths relative to image_root, in POSIX form (``Person/Person_0001.jpg``).
    keys: tuple[str, ...]
    subjects: np.ndarray
    subject_names: tuple[str, ...]
    pairs: Pairs | None

    def path(self, index: int) -> Path:
        return self.image_root / self.keys[index]

    def __len__(self) -> int:
        return len(self.keys)


def detect_layout(root: Path) -> Layout:
    return Layout.LFW if (root / PAIRS_FILE).is_file() else Layout.FOLDERS


def load_set(root: Path, layout: Layout | None = None, name: str | None = None) -> LabeledSet:
    """Read a set; the layout is guessed from the presence of ``pairs.txt`` unless given."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    layout = layout or detect_layout(root)
    name = name or root.name
    if layout is Layout.LFW:
        return _load_lfw(root, name)
    return _load_folders(root, name)


def _lfw_key(person: str, number: str) -> str:
    try:
        return f"{person}/{person}_{int(number):04d}.jpg"
    except ValueError as exc:
        raise DatasetError(f"image number {number!r} of {person} is not an integer") from exc


def _load_lfw(root: Path, name: str) -> LabeledSet:
    lines = [line.split() for line in (root / PAIRS_FILE).read_text().splitlines() if line.strip()]
    try:
        folds, per_class = int(lines[0][0]), int(lines[0][1])
    except (IndexError, ValueError) as exc:
        raise DatasetError(f"{root / PAIRS_FILE} does not start with '<folds> <pairs per class>'") from exc
    body = lines[1:]
    if len(body) != folds * 2 * per_class:
        raise DatasetError(f"{root / PAIRS_FILE} promises {folds}x{2 * per_class} pairs, holds {len(body)}")
    listed: list[tuple[str, str, str, str]] = []
    for number, fields in enumerate(body, start=2):
        if len(fields) == 3:
            listed.append((fields[0], _lfw_key(fields[0], fields[1]), fields[0], _lfw_key(fields[0], fields[2])))
        elif len(fields) == 4:
            listed.append((fields[0], _lfw_key(fields[0], fields[1]), fields[2], _lfw_key(fields[2], fields[3])))
        else:
            raise DatasetError(f"{root / PAIRS_FILE} line {number} is neither a mated nor a non-mated pair")
    subject_of = {key: person for a, ka, b, kb in listed for person, key in ((a, ka), (b, kb))}
    keys = tuple(sorted(subject_of))
    image_root = root / IMAGES_DIR
    missing = [key for key in keys if not (image_root / key).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} images named in {PAIRS_FILE} are missing, e.g. {image_root / missing[0]}")
    names = tuple(sorted(set(subject_of.values())))
    index_of_subject = {person: i for i, person in enumerate(names)}
    index_of_key = {key: i for i, key in enumerate(keys)}
    positions = np.arange(len(listed))
    return LabeledSet(
        name=name,
        root=root,
        layout=Layout.LFW,
        image_root=image_root,
        keys=keys,
        subjects=np.array([index_of_subject[subject_of[key]] for key in keys], dtype=np.int64),
        subject_names=names,
        pairs=Pairs(
            first=np.array([index_of_key[ka] for _, ka, _, _ in listed], dtype=np.int64),
            second=np.array([index_of_key[kb] for _, _, _, kb in listed], dtype=np.int64),
            mated=(positions % (2 * per_class)) < per_class,
            fold=positions // (2 * per_class),
        ),
    )


def _load_folders(root: Path, name: str) -> LabeledSet:
    identities = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    keys: list[str] = []
    subjects: list[int] = []
    names: list[str] = []
    for folder in identities:
        images = sorted(
            p for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not images:
            continue
        names.append(folder.name)
        keys.extend(p.relative_to(root).as_posix() for p in images)
        subjects.extend([len(names) - 1] * len(images))
    if not keys:
        raise DatasetError(f"{root} holds no identity folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return LabeledSet(
        name=name,
        root=root,
        layout=Layout.FOLDERS,
        image_root=root,
        keys=tuple(keys),
        subjects=np.array(subjects, dtype=np.int64),
        subject_names=tuple(names),
        pairs=None,
    )


def read_landmarks(path: Path) -> dict[str, np.ndarray]:
    """Published five-point landmarks: ``key x1 y1 ... x5 y5`` per line (eyes, nose tip,
    mouth corners; image-left first; original pixels) to (5, 2) arrays by image key."""
    points: dict[str, np.ndarray] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = np.array([float(v) for v in fields[1:]], dtype=np.float32)
        except ValueError as exc:
            raise DatasetError(f"{path} line {number}: coordinates are not numbers") from exc
        if values.shape != (10,):
            raise DatasetError(f"{path} line {number}: expected a key and 10 coordinates, got {len(fields)} fields")
        points[fields[0]] = values.reshape(5, 2)
    return points
