"""`verifier watchlist import|export|stats` as an operator runs them: real processes, real photos."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from verifier.config import Settings
from verifier.watchlist.store import WatchlistStore
from verifier.templates import TemplateSpec


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`verifier watchlist ARGS` with its data in ``data_dir``; an import creates the
    store first, as an operator would (`init` once)."""
    env = {**os.environ, "VERIFIER_DATA_DIR": str(data_dir)}
    if args[0] == "import" and not (data_dir / "watchlist").exists():
        subprocess.run([sys.executable, "-m", "verifier.cli", "watchlist", "init"], check=True, timeout=120, env=env,
                       capture_output=True)
    return subprocess.run([sys.executable, "-m", "verifier.cli", "watchlist", *args],
                          capture_output=True, text=True, timeout=300, check=False, env=env)


@pytest.fixture()
def folders(photos: dict[str, Path], tmp_path: Path) -> Path:
    """<subject>/<image>: two people with faces, and one whose only photo has none."""
    root = tmp_path / "source"
    for subject, names in {"obama": ["obama.jpg", "obama2.jpg"], "biden": ["biden.jpg"]}.items():
        (root / subject).mkdir(parents=True)
        for name in names:
            shutil.copy(photos[name], root / subject / name)
    (root / "nobody").mkdir()
    wall = cv2.imread(str(photos["obama.jpg"]))[:60, :60].copy().repeat(8, 0).repeat(8, 1)
    cv2.imwrite(str(root / "nobody" / "wall.jpg"), wall)
    return root


def test_folder_import_reports_failures_and_resumes(folders: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _run(data, "import", str(folders), "--watchlist", "wanted", "--reason", "warrant",
                 "--source-agency", "police")
    assert first.returncode == 1, first.stderr
    assert "3 subjects in the source: 2 enrolled, 0 already enrolled (skipped), 1 failed" in first.stdout
    assert "failures by reason: NO_FACE 1" in first.stdout and "wall.jpg" in first.stdout
    assert "enrolling into wanted" in first.stderr  # the progress bar
    again = _run(data, "import", str(folders), "--watchlist", "wanted")
    assert again.returncode == 1
    assert "3 subjects in the source: 0 enrolled, 2 already enrolled (skipped), 1 failed" in again.stdout
    stats = _run(data, "stats")
    assert stats.returncode == 0, stats.stderr
    row = next(line.split() for line in stats.stdout.splitlines() if line.startswith("wanted"))
    assert row[1:4] == ["2", "0", "3"]
    assert "saved index: current" in stats.stdout


def test_csv_import_and_export(photos: dict[str, Path], tmp_path: Path, template_spec: TemplateSpec) -> None:
    data = tmp_path / "data"
    listing = tmp_path / "list.csv"
    shutil.copy(photos["obama.jpg"], tmp_path / "a.jpg")
    shutil.copy(photos["obama3.jpg"], tmp_path / "b.jpg")
    listing.write_text(
        "subject_id,image,reason,source_agency,external_ref,expires\n"
        "W-1,a.jpg,warrant,partner police,case 17,2031-01-01T00:00:00+00:00\n"
        "W-1,b.jpg,,,,\n"
        "W-2,missing.jpg,warrant,partner police,,\n"
    )
    result = _run(data, "import", str(listing), "--watchlist", "partner", "--description", "shared list")
    assert result.returncode == 1
    assert "1 enrolled" in result.stdout and "UNREADABLE" in result.stdout and "missing.jpg" in result.stdout
    exported = tmp_path / "out.jsonl"
    assert _run(data, "export", str(exported), "--watchlist", "partner").returncode == 0
    (record,) = [json.loads(line) for line in exported.read_text().splitlines()]
    assert record["subject_id"] == "W-1" and record["external_ref"] == "case 17"
    assert record["source_agency"] == "partner police" and record["expires"].startswith("2031-01-01")
    vectors = [np.frombuffer(base64.b64decode(t["vector"]), dtype="<f4") for t in record["templates"]]
    assert len(vectors) == 2 and all(v.shape == (template_spec.dimension,) for v in vectors)
    assert float(vectors[0] @ vectors[1]) > 0.5  # two photos of one man


def test_import_is_refused_while_another_process_writes(
    folders: Path, tmp_path: Path, settings: Settings
) -> None:
    data = tmp_path / "data"
    holder = WatchlistStore.create(settings.watchlist.store_file(data), busy_timeout=1.0)
    try:
        result = _run(data, "import", str(folders), "--watchlist", "wanted")
    finally:
        holder.close()
    assert result.returncode == 2 and "in use by another process" in result.stderr
    assert "Traceback" not in result.stderr


def test_stats_without_a_store_is_a_clear_error(tmp_path: Path) -> None:
    result = _run(tmp_path, "stats")
    assert result.returncode == 2 and "no watch-list store" in result.stderr
