"""Small real evaluation sets cut from the LFW dev half (links to its images, never copies
into the project), and their templates through the real pipeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from verifier.config import Settings
from verifier.evaluation.cache import SetTemplates, embed_set
from verifier.evaluation.datasets import IMAGES_DIR, PAIRS_FILE, LabeledSet, load_set
from verifier.evaluation.cli import LANDMARKS_FILE
from verifier.pipeline import FaceEngine, Selection

MINI_FOLDS = 2
MINI_PAIRS_PER_CLASS = 20
MINI_ENROLLED = 8
MINI_IMAGES_EACH = 3
MINI_SINGLES = 10
# A no-face image: the top-left corner of a real LFW photo (background only).
BACKGROUND_CROP = 64


def _link_image(source_root: Path, key: str, target_root: Path) -> None:
    target = target_root / key
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(source_root / key)


@pytest.fixture(scope="session")
def mini_lfw(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 20 mated and 20 non-mated pairs of folds 1 and 2, LFW layout, with the landmarks file."""
    root = tmp_path_factory.mktemp("mini-lfw")
    lines = (lfw_dev / PAIRS_FILE).read_text().splitlines()
    per_class = int(lines[0].split()[1])
    chosen = []
    for fold in range(MINI_FOLDS):
        start = 1 + fold * 2 * per_class
        chosen += lines[start : start + MINI_PAIRS_PER_CLASS]
        chosen += lines[start + per_class : start + per_class + MINI_PAIRS_PER_CLASS]
    (root / PAIRS_FILE).write_text("\n".join([f"{MINI_FOLDS}\t{MINI_PAIRS_PER_CLASS}", *chosen]) + "\n")
    (root / LANDMARKS_FILE).symlink_to(lfw_dev / LANDMARKS_FILE)
    for line in chosen:
        fields = line.split()
        named = [(fields[0], fields[1]), (fields[0], fields[2])] if len(fields) == 3 else [
            (fields[0], fields[1]), (fields[2], fields[3])
        ]
        for person, number in named:
            _link_image(lfw_dev / IMAGES_DIR, f"{person}/{person}_{int(number):04d}.jpg", root / IMAGES_DIR)
    return root


@pytest.fixture(scope="session")
def mini_folders(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder layout: 8 people with 3 images, 10 with one, and a background crop (no face)
    filed under the first person so that one mated search fails to acquire."""
    root = tmp_path_factory.mktemp("mini-folders")
    people = sorted(p for p in (lfw_dev / IMAGES_DIR).iterdir() if p.is_dir())
    several = [p for p in people if len(list(p.iterdir())) >= MINI_IMAGES_EACH][:MINI_ENROLLED]
    singles = [p for p in people if len(list(p.iterdir())) == 1][:MINI_SINGLES]
    for person in several:
        for image in sorted(person.iterdir())[:MINI_IMAGES_EACH]:
            _link_image(lfw_dev / IMAGES_DIR, f"{person.name}/{image.name}", root)
    for person in singles:
        image = next(person.iterdir())
        _link_image(lfw_dev / IMAGES_DIR, f"{person.name}/{image.name}", root)
    first = sorted(several[0].iterdir())[0]
    corner = cv2.imread(str(first))[:BACKGROUND_CROP, :BACKGROUND_CROP]
    cv2.imwrite(str(root / several[0].name / "zz_background.png"), corner)
    return root


@pytest.fixture(scope="session")
def mini_lfw_set(mini_lfw: Path) -> LabeledSet:
    return load_set(mini_lfw, name="mini-lfw")


@pytest.fixture(scope="session")
def mini_folder_set(mini_folders: Path) -> LabeledSet:
    return load_set(mini_folders, name="mini-folders")


@pytest.fixture(scope="session")
def mini_lfw_templates(engine: FaceEngine, settings: Settings, mini_lfw_set: LabeledSet) -> SetTemplates:
    return embed_set(engine, mini_lfw_set, settings.evaluation.cache_dir, Selection.CENTRE)


@pytest.fixture(scope="session")
def mini_folder_templates(engine: FaceEngine, settings: Settings, mini_folder_set: LabeledSet) -> SetTemplates:
    return embed_set(engine, mini_folder_set, settings.evaluation.cache_dir, Selection.CENTRE)
