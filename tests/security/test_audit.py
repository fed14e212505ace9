"""The audit trail on disk: an intact chain verifies; an edited, deleted,
inserted or reordered record is named by `verifier audit verify`; export and
the read filters; an insecure public bind is refused at start."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from verifier.cli import main
from verifier.config import Settings
from verifier.security.audit import CHANGE, DECISION, AuditLog, Entry, RecordFilter, read_records
from verifier.server.edge import EdgeConfigError, build_edge

RECORDS = 10


@pytest.fixture()
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit.sqlite3"
    audit = AuditLog(path, commit_window_seconds=0.05, busy_timeout_seconds=5.0)
    for n in range(1, RECORDS + 1):
        if n % 3 == 0:
            audit.append_change(Entry("operator-1", "operator", "/verifier.v1.Watchlist/EnrollSubject", CHANGE, "OK",
                                      targets=(f"wanted/S-{n}",), request_id=f"r{n}"))
        else:
            audit.append_decision(Entry("kiosk-7", "kiosk", "/verifier.v1.FaceVerifier/Verify", DECISION, "OK",
                                        decision="match", scores=(0.61 + n / 1000,), threshold=0.4497, rate=1e-3,
                                        model_id="mobilefacenet-192:abc", request_id=f"r{n}"))
    audit.close()
    return path


def _verify(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", "--path", str(path)])
    return code, capsys.readouterr().out


def _tamper(path: Path, *statements: str) -> None:
    """What someone with write access to the file can do: drop the guards and edit."""
    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete; " + "; ".join(statements))
    db.commit()
    db.close()


def test_an_intact_trail_verifies(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _verify(trail, capsys)
    assert code == 0 and f"intact: {RECORDS} records" in out


def test_the_trail_refuses_edits_through_sql(trail: Path) -> None:
    db = sqlite3.connect(trail)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE records SET outcome = 'OK' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM records WHERE seq = 1")
    db.close()


@pytest.mark.parametrize(
    ("statements", "named"),
    [
        (["UPDATE records SET decision = 'no match' WHERE seq = 4"], 4),
        (["UPDATE records SET scores = '[0.99]' WHERE seq = 7"], 7),
        (["DELETE FROM records WHERE seq = 5"], 6),
        # A forged copy of record 3 slipped in between 5 and 6 (rows renumbered).
        (["UPDATE records SET seq = seq + 100 WHERE seq > 5", "UPDATE records SET seq = seq - 99 WHERE seq > 100",
          "INSERT INTO records SELECT 6, time, identity, role, rpc, kind, targets, outcome, reason, decision, "
          "scores, threshold, rate, model_id, request_id, prev_hash, hash FROM records WHERE seq = 3"], 6),
        # Records 8 and 9 swapped, each keeping its own hash.
        (["UPDATE records SET seq = 100 WHERE seq = 8", "UPDATE records SET seq = 8 WHERE seq = 9",
          "UPDATE records SET seq = 9 WHERE seq = 100"], 8),
    ],
    ids=["edit-decision", "edit-score", "delete", "insert", "reorder"],
)
def test_tampering_is_named(
    trail: Path, capsys: pytest.CaptureFixture[str], statements: list[str], named: int
) -> None:
    _tamper(trail, *statements)
    code, out = _verify(trail, capsys)
    assert code == 1, out
    assert out.startswith(f"TAMPERED: record {named}:"), out


def test_export_filters_by_caller_subject_and_outcome(trail: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trail.jsonl"
    assert main(["audit", "export", str(out), "--path", str(trail), "--identity", "operator-1"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [3, 6, 9]
    assert all("vector" not in r and "image" not in r for r in lines)
    assert [r.seq for r in read_records(trail, RecordFilter(subject="S-6"))] == [6]
    assert [r.seq for r in read_records(trail, RecordFilter(subject="wanted/S-9"))] == [9]
    assert len(list(read_records(trail, RecordFilter(outcome="OK", after_seq=8)))) == 2


def test_an_insecure_public_bind_is_refused(settings: Settings, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    local = settings.model_copy(deep=True)
    local.data_dir = tmp_path
    local.server.host = "0.0.0.0"
    with pytest.raises(EdgeConfigError, match="without TLS"):
        build_edge(local)
    local.security.allow_insecure = True
    with caplog.at_level(logging.WARNING):
        edge = build_edge(local)
    edge.close()
    assert not edge.tls and edge.reflection
    assert "WITHOUT TLS" in caplog.text
