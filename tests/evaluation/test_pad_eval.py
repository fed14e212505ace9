"""`verifier pad-eval` on a labelled folder of real photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from verifier.cli import main


def _folder(root: Path, photos: dict[str, Path]) -> Path:
    """bona_fide/: three real photos; screen/: a real photo filed as an attack
    (labels are what is counted; it is no real attack) and an image without a face."""
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        (root / "bona_fide").mkdir(parents=True, exist_ok=True)
        shutil.copy(photos[name], root / "bona_fide" / name)
    (root / "screen").mkdir()
    shutil.copy(photos["obama3.jpg"], root / "screen" / "obama3.jpg")
    cv2.imwrite(str(root / "screen" / "blank.png"), np.full((200, 200, 3), 120, np.uint8))
    return root


def test_bpcer_and_apcer_per_attack_type_are_counted(tmp_path: Path, photos: dict[str, Path]) -> None:
    folder = _folder(tmp_path / "set", photos)
    out = tmp_path / "pad.json"
    assert main(["pad-eval", str(folder), "--pack", "fast-legacy", "--threshold", "0.5", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    classes = {c["name"]: c for c in report["classes"]}
    assert len(classes["bona_fide"]["scores"]) == 3 and not classes["bona_fide"]["not_acquired"]
    assert len(classes["screen"]["scores"]) == 1
    assert classes["screen"]["not_acquired"] == ["blank.png: NO_FACE"]
    given = next(p for p in report["operating_points"] if p["source"] == "given")
    # Real faces score live: no bona fide presentation is called an attack, and
    # the real photo filed as a screen attack passes as live.
    assert given["bpcer"] == 0.0 and given["apcer"] == {"screen": 1.0}
    assert {p["source"] for p in report["operating_points"]} >= {"BPCER 1 %", "BPCER 5 %"}


def test_a_pack_without_a_pad_model_or_an_unlabelled_folder_is_an_error(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    folder = _folder(tmp_path / "set", photos)
    assert main(["pad-eval", str(folder), "--pack", "default"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["pad-eval", str(tmp_path / "empty"), "--pack", "fast-legacy"]) == 2
    assert main(["pad-eval", str(folder), "--pack", "fast-legacy", "--threshold", "1.5"]) == 2


def test_files_the_service_would_refuse_are_listed_with_their_reason_and_the_rest_scored(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    folder = _folder(tmp_path / "set", photos)
    (folder / "bona_fide" / "truncated.jpg").write_bytes(photos["obama.jpg"].read_bytes()[:600])
    (folder / "bona_fide" / "empty.png").write_bytes(b"")
    out = tmp_path / "pad.json"
    assert main(["pad-eval", str(folder), "--pack", "fast-legacy", "--output", str(out)]) == 0
    bona = next(c for c in json.loads(out.read_text())["classes"] if c["name"] == "bona_fide")
    assert len(bona["scores"]) == 3
    assert sorted(bona["not_acquired"]) == ["empty.png: IMAGE_EMPTY", "truncated.jpg: IMAGE_UNDECODABLE"]

