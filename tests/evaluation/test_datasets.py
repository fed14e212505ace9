from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verifier.evaluation.datasets import IMAGES_DIR, PAIRS_FILE, DatasetError, Layout, load_set, read_landmarks
from verifier.evaluation.cli import LANDMARKS_FILE


def test_the_lfw_dev_pairs_read_as_the_protocol_says(lfw_dev: Path) -> None:
    labeled = load_set(lfw_dev)
    assert labeled.layout is Layout.LFW and labeled.pairs is not None
    pairs = labeled.pairs
    assert len(pairs.mated) == 3000 and pairs.mated.sum() == 1500 and pairs.folds == 5
    assert np.all(np.bincount(pairs.fold) == 600)
    same = labeled.subjects[pairs.first] == labeled.subjects[pairs.second]
    np.testing.assert_array_equal(same, pairs.mated)
    assert len(labeled) == 3811 and len(labeled.subject_names) == 2086
    assert all(labeled.path(i).is_file() for i in (0, len(labeled) - 1))


def test_the_image_folders_read_as_one_folder_per_identity(lfw_dev: Path) -> None:
    labeled = load_set(lfw_dev / IMAGES_DIR)
    assert labeled.layout is Layout.FOLDERS and labeled.pairs is None
    per_subject = np.bincount(labeled.subjects)
    assert len(labeled) == 5373 and len(per_subject) == 2086
    assert (per_subject == 1).sum() == 1312
    name = labeled.subject_names[labeled.subjects[0]]
    assert labeled.keys[0].startswith(f"{name}/")


def test_published_landmarks_cover_every_image_eyes_first(lfw_dev: Path) -> None:
    points = read_landmarks(lfw_dev / LANDMARKS_FILE)
    labeled = load_set(lfw_dev / IMAGES_DIR)
    assert set(labeled.keys) <= set(points)
    stacked = np.stack(list(points.values()))
    assert stacked.shape[1:] == (5, 2)
    eyes_above_mouth = stacked[:, :2, 1].mean(axis=1) < stacked[:, 3:, 1].mean(axis=1)
    left_eye_left = stacked[:, 0, 0] < stacked[:, 1, 0]
    assert eyes_above_mouth.mean() > 0.99 and left_eye_left.mean() > 0.99


def test_a_pairs_file_that_breaks_its_header_is_refused(mini_lfw: Path, tmp_path: Path) -> None:
    (tmp_path / PAIRS_FILE).write_text((mini_lfw / PAIRS_FILE).read_text().replace("2\t20", "3\t20", 1))
    with pytest.raises(DatasetError, match="promises"):
        load_set(tmp_path)


def test_a_missing_image_is_refused(mini_lfw: Path, tmp_path: Path) -> None:
    (tmp_path / PAIRS_FILE).write_text((mini_lfw / PAIRS_FILE).read_text())
    (tmp_path / IMAGES_DIR).mkdir()
    with pytest.raises(DatasetError, match="missing"):
        load_set(tmp_path)


def test_a_folder_without_identity_folders_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no identity folders"):
        load_set(tmp_path)
