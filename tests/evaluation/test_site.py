"""`verifier calibration site` on real captures through the real pipeline: a table the
server takes, and clear refusals for the inputs that cannot give one."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from verifier.calibration import serving_threshold
from verifier.cli import EXIT_ERROR, build_parser
from verifier.config import Settings
from verifier.evaluation.conditions import condition
from verifier.evaluation.datasets import IMAGES_DIR, read_landmarks
from verifier.evaluation.cli import LANDMARKS_FILE
from verifier.evaluation.site import MIN_CAPTURES
from verifier.pipeline import FaceEngine
from verifier.site_calibration import load_site_table

PEOPLE = 40


def _run(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args, settings))


@pytest.fixture(scope="module")
def studio(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One single-studio capture (tight grey 45x60 crop) of each of 40 LFW people."""
    root = tmp_path_factory.mktemp("studio")
    landmarks = read_landmarks(lfw_dev / LANDMARKS_FILE)
    people: dict[str, str] = {}
    for key in sorted(landmarks):
        people.setdefault(key.split("/")[0], key)
    for person, key in list(people.items())[:PEOPLE]:
        data = (lfw_dev / IMAGES_DIR / key).read_bytes()
        (root / f"{person}.png").write_bytes(condition("single-studio").apply(data, landmarks[key]))
    return root


@pytest.fixture
def folder(studio: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "captures"
    shutil.copytree(studio, copy)
    return copy


def test_a_site_table_from_one_capture_per_traveller(
    settings: Settings, engine: FaceEngine, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "site.json"
    local = settings.model_copy(deep=True)
    local.evaluation.cache_dir = tmp_path / "cache"
    argv = ["calibration", "site", str(folder), "--site", "studio", "--output", str(out), "--no-cache"]
    assert _run(argv, local) == 0
    assert not local.evaluation.cache_dir.exists()  # --no-cache: no template of a traveller left behind
    printed = capsys.readouterr().out
    comparisons = PEOPLE * (PEOPLE - 1) // 2
    assert f"{comparisons:,} non-mated comparisons: they support FMR down to" in printed
    table = load_site_table(out)
    assert table.site == "studio" and table.acquired == PEOPLE and table.non_mated_comparisons == comparisons
    assert table.lowest_supported_fmr == pytest.approx(3 / comparisons, rel=0.01)
    # 780 comparisons support FMR 1e-2 and nothing stricter: those rows say so.
    assert {row.target_fmr: row.supported for row in table.rows} == {1e-2: True, 1e-3: False, 1e-4: False, 1e-5: False}
    assert "NOT SUPPORTED" in printed
    local.matching.site_calibration_file = out
    pack = serving_threshold(settings, engine.model_id, engine.operating_point)
    assert serving_threshold(local, engine.model_id, engine.operating_point).value >= pack.value


def test_the_same_traveller_twice_is_named(
    settings: Settings, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / f"zz-again-{first.name}")
    argv = ["calibration", "site", str(folder), "--output", str(tmp_path / "site.json")]
    assert _run(argv, settings) == EXIT_ERROR
    error = capsys.readouterr().err
    assert f"{first.name} and zz-again-{first.name}" in error and "--drop-near-duplicates" in error
    assert _run([*argv, "--drop-near-duplicates"], settings) == 0
    table = load_site_table(tmp_path / "site.json")
    assert table.near_duplicates == 1 and table.acquired == PEOPLE


def test_too_few_captures_are_refused(settings: Settings, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in sorted(folder.iterdir())[MIN_CAPTURES - 1:]:
        extra.unlink()
    assert _run(["calibration", "site", str(folder)], settings) == EXIT_ERROR
    assert f"holds {MIN_CAPTURES - 1} captures" in capsys.readouterr().err


def test_corrupt_files_are_named_or_skipped_on_request(
    settings: Settings, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    argv = ["calibration", "site", str(folder), "--output", str(tmp_path / "site.json")]
    assert _run(argv, settings) == EXIT_ERROR
    assert "not images the service decodes: broken.jpg" in capsys.readouterr().err
    assert _run([*argv, "--skip-unreadable"], settings) == 0
    table = load_site_table(tmp_path / "site.json")
    assert table.images == PEOPLE + 1 and table.acquired == PEOPLE and sum(table.failures.values()) == 1


def test_an_identity_per_folder_set_is_refused(
    settings: Settings, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "Some_Person").mkdir()
    assert _run(["calibration", "site", str(folder)], settings) == EXIT_ERROR
    assert "sub-folders (Some_Person)" in capsys.readouterr().err


def test_a_site_table_from_the_watch_lists_enrolments(
    settings: Settings, engine: FaceEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One stored template per subject, read from the store (no image): a subject in two
    lists with the same photo is the same traveller twice, and is named."""
    import numpy as np

    from verifier.templates import Template
    from verifier.watchlist.service import initialise_store
    from verifier.watchlist.store import SubjectEntry, WatchlistStore

    local = settings.model_copy(deep=True)
    local.data_dir = tmp_path / "data"
    path = initialise_store(local)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((PEOPLE, engine.embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = WatchlistStore.open(path, 5.0)
    for name in ("wanted", "lost"):
        store.create_watchlist(name, "")
    for i, vector in enumerate(vectors):
        store.add_subject(SubjectEntry("wanted", f"s{i}", "test", "T"), [Template(engine.model_id, vector)])
    store.add_subject(SubjectEntry("lost", "again", "test", "T"), [Template(engine.model_id, vectors[0])])
    store.close()
    out = tmp_path / "site.json"
    argv = ["calibration", "site", "--from-store", "watchlists", "--output", str(out)]
    assert _run(argv, local) == EXIT_ERROR
    error = capsys.readouterr().err
    assert re.search(r"watchlists row (1 and watchlists row 41|41 and watchlists row 1) \(1\.000\)", error), error
    assert _run([*argv, "--drop-near-duplicates"], local) == 0
    table = load_site_table(out)
    assert (table.images, table.acquired, table.near_duplicates) == (PEOPLE + 1, PEOPLE, 1)
    assert table.source.startswith("watchlists of store")
