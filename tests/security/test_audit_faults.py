"""The audit trail through a storage fault, in process: a write refused by the
file system leaves nothing behind, makes the trail unavailable (refusals say
which fault; listeners hear it), keeps the decisions already answered, and the
trail resumes by itself on a fresh connection, with one record of the outage
and an intact chain. Storage faults are named from SQLite's and the OS's errors.
(A full disk in a real server process: tests/server/test_storage_faults.py.)"""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path

import pytest

from verifier.errors import Reason, VerifierError
from verifier.security.audit import CHANGE, DECISION, AuditLog, Entry, RecordFilter, read_records, verify_chain
from verifier.storage.faults import DISK_FULL, IO_ERROR, READ_ONLY, fault_of


def _decision(n: int) -> Entry:
    return Entry("kiosk-7", "kiosk", "/verifier.v1.FaceVerifier/Verify", DECISION, "OK", decision="match",
                 request_id=f"d{n}")


def _change(n: int) -> Entry:
    return Entry("operator-1", "operator", "/verifier.v1.Watchlist/EnrollSubject", CHANGE, "STARTED",
                 targets=(f"wanted/S-{n}",), request_id=f"c{n}")


def test_faults_are_named() -> None:
    readonly = sqlite3.connect("file::memory:?mode=ro", uri=True)
    with pytest.raises(sqlite3.Error) as caught:
        readonly.execute("CREATE TABLE t (x)")
    assert fault_of(caught.value) == READ_ONLY
    assert fault_of(OSError(errno.ENOSPC, "No space left on device")) == DISK_FULL
    assert fault_of(OSError(errno.EROFS, "Read-only file system")) == READ_ONLY
    assert fault_of(OSError(errno.EIO, "Input/output error")) == IO_ERROR
    wrapped = RuntimeError("store failed")
    wrapped.__cause__ = OSError(errno.EFBIG, "File too large")
    assert fault_of(wrapped) == DISK_FULL


def test_a_trail_that_cannot_be_written_refuses_then_resumes_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    audit = AuditLog(path, commit_window_seconds=1.0, busy_timeout_seconds=5.0, retry_seconds=0.05)
    heard: list[bool] = []
    audit.on_availability(heard.append)
    try:
        audit.append_change(_change(1))
        audit.append_decision(_decision(1))  # answered; written within the commit window
        # The file system turns read-only under the open connection (a fresh one can write).
        audit._db.execute("PRAGMA query_only=ON")  # noqa: SLF001 - the stand-in for a read-only remount
        with pytest.raises(VerifierError) as refused:
            audit.append_change(_change(2))
        assert refused.value.reason is Reason.STORE_UNAVAILABLE
        assert refused.value.details == {"store": "audit", "fault": READ_ONLY}
        assert not audit.available and heard == [False]
        with pytest.raises(VerifierError):
            audit.append_decision(_decision(2))
        with pytest.raises(VerifierError):
            audit.require_available()
        deadline = time.monotonic() + 10
        while not audit.available and time.monotonic() < deadline:
            time.sleep(0.02)
        assert audit.available and heard == [False, True]
        audit.append_change(_change(3))
    finally:
        audit.close()
    records = list(read_records(path, RecordFilter()))
    assert [r.request_id or r.rpc for r in records] == ["c1", "d1", "audit.outage", "c3"]
    outage = records[2]
    assert outage.outcome == "UNAVAILABLE" and "read_only" in outage.decision
    assert "3 audited calls refused meanwhile" in outage.decision
    assert verify_chain(path).intact
