"""The offline import is on the record as the local operator: one STARTED and
one outcome record per subject, failures with their reason."""

from __future__ import annotations

import getpass
import shutil
from pathlib import Path

import cv2

from tests.watchlist.test_cli import _run
from verifier.config import Settings
from verifier.security.audit import RecordFilter, read_records, verify_chain


def test_watchlist_import_is_audited(photos: dict[str, Path], settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "obama").mkdir(parents=True)
    shutil.copy(photos["obama.jpg"], source / "obama" / "obama.jpg")
    (source / "nobody").mkdir()
    wall = cv2.imread(str(photos["obama.jpg"]))[:60, :60].copy().repeat(8, 0).repeat(8, 1)
    cv2.imwrite(str(source / "nobody" / "wall.jpg"), wall)
    data = tmp_path / "data"
    assert _run(data, "import", str(source), "--watchlist", "wanted").returncode == 1

    trail = settings.audit.file(data)
    assert verify_chain(trail).intact
    records = [(r.rpc.rsplit("/", 1)[-1], r.targets, r.outcome, r.reason) for r in read_records(trail, RecordFilter())]
    store = str(settings.watchlist.store_file(data))
    assert records == [
        ("CreateStore", (store,), "STARTED", ""), ("CreateStore", (store,), "OK", ""),  # `watchlist init`
        ("CreateWatchlist", ("wanted",), "STARTED", ""), ("CreateWatchlist", ("wanted",), "OK", ""),
        ("EnrollSubject", ("wanted/nobody",), "STARTED", ""), ("EnrollSubject", ("wanted/nobody",), "FAILED", "NO_FACE"),
        ("EnrollSubject", ("wanted/obama",), "STARTED", ""), ("EnrollSubject", ("wanted/obama",), "OK", ""),
    ]
    assert {(r.identity, r.role) for r in read_records(trail, RecordFilter())} == {
        (f"local-operator:{getpass.getuser()}", "operator")
    }
