"""`verifier verify` as a person runs it: a real process, real photos, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _verify(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", "verify", str(a), str(b)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_two_photos_of_one_person_match(photos: dict[str, Path]) -> None:
    result = _verify(photos["obama3.jpg"], photos["obama.jpg"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("match: score")


def test_two_people_do_not_match(photos: dict[str, Path]) -> None:
    result = _verify(photos["obama.jpg"], photos["biden.jpg"])
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("no match: score")


def test_a_file_that_is_not_an_image_is_a_clear_error(photos: dict[str, Path], tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    result = _verify(photos["obama.jpg"], notes)
    assert result.returncode == 2
    assert "notes.txt" in result.stderr and "IMAGE_UNDECODABLE" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_a_clear_error(photos: dict[str, Path], tmp_path: Path) -> None:
    result = _verify(tmp_path / "absent.jpg", photos["obama.jpg"])
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr
