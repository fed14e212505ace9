"""The watch-list service: real photos through the real engine, a real store and
index, and the index kept in agreement with the store across remove, re-enrolment,
expiry and restarts (clean, and without the index being saved)."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest

from tests.watchlist.samples import local_settings, templates_of
from verifier.config import Settings
from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.templates import Template
from verifier.watchlist.service import WatchlistService
from verifier.watchlist.store import SubjectEntry


def _entry(subject_id: str, watchlist: str = "wanted", expires: datetime | None = None) -> SubjectEntry:
    return SubjectEntry(watchlist, subject_id, "warrant", "police", "", expires)


def _reopen(settings: Settings, engine: FaceEngine, data_dir: Path, source: str) -> WatchlistService:
    service = WatchlistService.open(local_settings(settings, data_dir), engine)
    assert service.load().source == source
    assert service.consistency().agrees
    return service


def _refused(reason: Reason, call, *args, **kwargs) -> VerifierError:  # noqa: ANN001
    with pytest.raises(VerifierError) as caught:
        call(*args, **kwargs)
    assert caught.value.reason is reason
    return caught.value


def test_photos_in_the_list_are_found_and_strangers_are_not(
    service: WatchlistService, photos: dict[str, Path]
) -> None:
    service.create_watchlist("wanted", "")
    enrolled = service.enrol(_entry("obama"), [photos["obama.jpg"].read_bytes(), photos["obama2.jpg"].read_bytes()])
    assert enrolled.subject.template_count == 2 and all(s.face is not None for s in enrolled.samples)
    found = service.identify(photos["obama3.jpg"].read_bytes())
    assert [(c.rank, c.subject.entry.subject_id) for c in found.candidates] == [(1, "obama")]
    assert found.candidates[0].score >= found.threshold.value and found.probe is not None
    assert not service.identify(photos["biden.jpg"].read_bytes()).candidates
    assert service.consistency().agrees


def test_remove_re_enrol_expire_and_restart_keep_index_and_store_in_agreement(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    service = _reopen(settings, engine, tmp_path, source="store")
    service.create_watchlist("wanted", "")
    keep, gone, back = templates_of(engine, 3, seed=1), templates_of(engine, 2, seed=2), templates_of(engine, 2, seed=3)
    service.enrol(_entry("keep"), keep)
    first = service.enrol(_entry("moved"), gone).subject
    service.remove("wanted", "moved")
    assert not service.identify(gone[0]).candidates
    again = service.enrol(_entry("moved"), back).subject
    assert again.row != first.row
    assert [c.subject.entry.subject_id for c in service.identify(back[1]).candidates] == ["moved"]
    assert not service.identify(gone[1]).candidates
    soon = datetime.now(UTC) + timedelta(seconds=1)
    short = templates_of(engine, 1, seed=4)
    service.enrol(_entry("short", expires=soon), short)
    assert service.identify(short[0]).candidates
    assert service.consistency().agrees
    service.close()

    service = _reopen(settings, engine, tmp_path, source="snapshot")
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    assert not service.identify(short[0]).candidates
    assert service.subject("wanted", "short").expired(time.time())
    assert [c.subject.entry.subject_id for c in service.identify(keep[2]).candidates] == ["keep"]
    assert service.consistency().agrees
    late = templates_of(engine, 2, seed=5)
    service.enrol(_entry("late"), late)
    service.remove("wanted", "keep")
    service.store.close()  # the process dies: no snapshot of these two changes

    service = _reopen(settings, engine, tmp_path, source="store")
    try:
        assert [c.subject.entry.subject_id for c in service.identify(late[1]).candidates] == ["late"]
        assert not service.identify(keep[0]).candidates
        assert service.consistency().store_templates == 4  # moved (2) and late (2)
    finally:
        service.close()


def test_a_start_from_the_snapshot_reports_the_quarantine_of_its_build(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    """The saved index names the templates it was built without: a start from it
    reports them (re-checked, without scanning the store) until they are gone."""
    service = _reopen(settings, engine, tmp_path, source="store")
    service.create_watchlist("wanted", "")
    kept = templates_of(engine, 1, seed=1)
    service.enrol(_entry("good"), kept)
    bad = service.enrol(_entry("bad"), templates_of(engine, 2, seed=2)).subject
    service.store.close()  # the process dies: no snapshot
    with sqlite3.connect(tmp_path / "watchlist" / "store.sqlite3") as conn:
        conn.execute("UPDATE templates SET vector = zeroblob(768) WHERE subject = ? AND position = 1", (bad.row,))
    for source in ("store", "snapshot"):
        service = _reopen(settings, engine, tmp_path, source=source)
        assert [(q.subject_id, q.position, q.reason) for q in service.quarantined] == [("bad", 1, "TEMPLATE_MALFORMED")]
        assert [c.subject.entry.subject_id for c in service.identify(kept[0]).candidates] == ["good"]
        service.close()
    service = _reopen(settings, engine, tmp_path, source="snapshot")
    service.remove("wanted", "bad")
    service.close()
    service = _reopen(settings, engine, tmp_path, source="snapshot")
    try:
        assert service.quarantined == ()
    finally:
        service.close()


def test_partial_enrolment_reports_each_image(service: WatchlistService, photos: dict[str, Path]) -> None:
    service.create_watchlist("wanted", "")
    photo = cv2.imread(str(photos["obama.jpg"]))
    wall = cv2.imencode(".jpg", photo[:60, :60].copy().repeat(8, 0).repeat(8, 1))[1].tobytes()
    samples = [wall, photos["obama.jpg"].read_bytes(), b"not an image"]
    error = _refused(Reason.NO_FACE, service.enrol, _entry("p"), samples)
    assert error.details["sample"] == "0" and error.details["failed_samples"] == "0,2"
    _refused(Reason.SUBJECT_NOT_FOUND, service.subject, "wanted", "p")
    enrolled = service.enrol(_entry("p"), samples, allow_partial=True)
    assert [(s.index, s.error.reason if s.error else None) for s in enrolled.samples] == [
        (0, Reason.NO_FACE), (1, None), (2, Reason.IMAGE_UNDECODABLE),
    ]
    assert enrolled.subject.template_count == 1
    _refused(Reason.NO_FACE, service.enrol, _entry("q"), [wall], allow_partial=True)


def test_refusals(service: WatchlistService, engine: FaceEngine) -> None:
    _refused(Reason.WATCHLIST_NOT_FOUND, service.enrol, _entry("x"), templates_of(engine, 1, seed=1))
    service.create_watchlist("wanted", "")
    _refused(Reason.WATCHLIST_EXISTS, service.create_watchlist, "wanted", "")
    _refused(Reason.REQUEST_INCOMPLETE, service.create_watchlist, "", "")
    _refused(Reason.REQUEST_INCOMPLETE, service.enrol, _entry(""), templates_of(engine, 1, seed=1))
    _refused(Reason.REQUEST_INCOMPLETE, service.enrol, _entry("x"), [])
    too_many = templates_of(engine, service.settings.max_templates_per_subject + 1, seed=2)
    _refused(Reason.TOO_MANY_TEMPLATES, service.enrol, _entry("x"), too_many)
    foreign = Template("faceplugin-feature-512:84fd65a16b57", templates_of(engine, 1, seed=3)[0].vector)
    _refused(Reason.TEMPLATE_MODEL_MISMATCH, service.enrol, _entry("x"), [foreign])
    _refused(Reason.TEMPLATE_MODEL_MISMATCH, service.identify, foreign)
    _refused(Reason.WATCHLIST_NOT_FOUND, service.identify, templates_of(engine, 1, seed=4)[0], ["nowhere"])
    _refused(Reason.SUBJECT_NOT_FOUND, service.remove, "wanted", "x")
    assert service.store.change_seq() == 1


def test_nothing_that_needs_the_index_runs_before_it_is_loaded(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    service = WatchlistService.open(local_settings(settings, tmp_path), engine)
    try:
        probe = templates_of(engine, 1, seed=1)[0]
        assert not service.ready and service.watchlists() == []
        _refused(Reason.INDEX_NOT_READY, service.identify, probe)
        _refused(Reason.INDEX_NOT_READY, service.create_watchlist, "wanted", "")
        service.load()
        assert service.ready
        service.create_watchlist("wanted", "")
        assert not service.identify(probe).candidates
    finally:
        service.close()
    _refused(Reason.INDEX_NOT_READY, service.identify, probe)


def test_without_a_snapshot_path_the_index_is_rebuilt(settings: Settings, engine: FaceEngine, tmp_path: Path) -> None:
    local = local_settings(settings, tmp_path)
    local.watchlist.snapshot_path = None
    for expected in ("store", "store"):
        service = WatchlistService.open(local, engine)
        assert service.load().source == expected
        service.close()
    assert not any(p.name.endswith("snapshot") for p in tmp_path.rglob("*"))


def test_top_k_is_capped_and_ordered(service: WatchlistService, engine: FaceEngine) -> None:
    service.create_watchlist("wanted", "")
    templates = templates_of(engine, 1, seed=1)
    for i in range(5):
        service.enrol(_entry(f"s{i}"), templates)
    service.settings.max_top_k = 3
    found = service.identify(templates[0], top_k=10)
    assert [c.rank for c in found.candidates] == [1, 2, 3]
    assert service.identify(templates[0], top_k=2).candidates[-1].rank == 2


def test_the_threshold_is_the_1_to_n_row_for_the_gallery_searched(
    service: WatchlistService, engine: FaceEngine, settings: Settings
) -> None:
    """The pack's 1:N calibration decides: the row for the target FPIR at the
    smallest measured gallery holding the templates searched, said in the source."""
    from verifier.calibration import calibration_path, load_table

    rows = sorted((row for row in load_table(calibration_path(settings)).identification
                   if row.target_fpir == settings.watchlist.target_fpir), key=lambda row: row.gallery_size)
    service.create_watchlist("small", "")
    service.create_watchlist("other", "")
    for i, template in enumerate(templates_of(engine, 3, seed=11)):
        service.enrol(_entry(f"S-{i}", "small"), [template])
    service.enrol(_entry("O-1", "other"), templates_of(engine, 2, seed=12))
    probe = templates_of(engine, 1, seed=11)[0]
    found = service.identify(probe, ["small"])
    assert found.threshold.value == rows[0].threshold and found.threshold.fpir == rows[0].target_fpir
    assert f"searching 3 templates, measured on a gallery of {rows[0].gallery_size}" in found.threshold.source
    assert "searching 5 templates" in service.identify(probe).threshold.source
