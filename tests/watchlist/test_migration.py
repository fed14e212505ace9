"""A change of model pack: lists of the old model are refused until migrated
from their stored images. Real photos, real stores, the real `default` and
`fusion` packs (another model id and dimension), real processes for the CLI."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from tests.watchlist.samples import local_settings, templates_of
from verifier.config import Settings
from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.security.audit import RecordFilter, read_records, verify_chain
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.service import WatchlistService
from verifier.storage.faults import StoreError
from verifier.watchlist.store import _SCHEMA, SCHEMA_VERSION, SubjectEntry, WatchlistStore

FUSION = "fusion"


@pytest.fixture(scope="module")
def fusion_settings(settings: Settings) -> Settings:
    changed = settings.model_copy(deep=True)
    changed.models.pack = FUSION
    return changed


@pytest.fixture(scope="module")
def fusion_engine(fusion_settings: Settings) -> FaceEngine:
    return FaceEngine.from_settings(fusion_settings)


def _entry(watchlist: str, subject_id: str) -> SubjectEntry:
    return SubjectEntry(watchlist, subject_id, "warrant", "police")


def _enrol_under_default(settings: Settings, engine: FaceEngine, photos: dict[str, Path], data: Path) -> None:
    """Two lists enrolled with the default pack: `wanted` holds two people from
    photos and one subject enrolled from a template alone; `partner` one person."""
    service = WatchlistService.open(local_settings(settings, data), engine)
    try:
        service.load()
        for name in ("wanted", "partner"):
            service.create_watchlist(name, "")
        service.enrol(_entry("wanted", "obama"), [photos["obama.jpg"].read_bytes(), photos["obama2.jpg"].read_bytes()])
        service.enrol(_entry("wanted", "biden"), [photos["biden.jpg"].read_bytes()])
        service.enrol(_entry("wanted", "bare"), templates_of(engine, 1, seed=7))
        service.enrol(_entry("partner", "obama"), [photos["obama2.jpg"].read_bytes()])
    finally:
        service.close()


def _cli(data: Path, *args: str, pack: str = FUSION) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERIFIER_DATA_DIR": str(data), "VERIFIER_MODELS__PACK": pack}
    return subprocess.run([sys.executable, "-m", "verifier.cli", "watchlist", *args],
                          capture_output=True, text=True, timeout=300, check=False, env=env)


def _refused(call, *args: object) -> VerifierError:  # noqa: ANN001
    with pytest.raises(VerifierError) as caught:
        call(*args)
    return caught.value


def test_images_are_kept_as_sent(
    settings: Settings, engine: FaceEngine, photos: dict[str, Path], tmp_path: Path
) -> None:
    _enrol_under_default(settings, engine, photos, tmp_path)
    store = WatchlistStore.open_readonly(settings.watchlist.store_file(tmp_path), 5.0)
    try:
        obama = store.subject("wanted", "obama")
        sent = [photos["obama.jpg"].read_bytes(), photos["obama2.jpg"].read_bytes()]
        kept = store.images_of(obama.row)
        assert obama.image_count == 2 and [image.data for image in kept] == sent
        assert [(i.sha256, i.size) for i in kept] == [(hashlib.sha256(b).hexdigest(), len(b)) for b in sent]
        assert all(image.intact for image in kept)
        assert store.subject("wanted", "bare").image_count == 0
        assert store.unmigrated(engine.model_id) == {}
    finally:
        store.close()


def test_a_schema_1_store_is_upgraded_when_opened_for_writing(settings: Settings, tmp_path: Path) -> None:
    path = settings.watchlist.store_file(tmp_path)
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA)
    old.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", 1), ("store_id", "old"), ("change_seq", 3)])
    old.execute("INSERT INTO watchlists VALUES ('wanted', '', 0)")
    old.execute("INSERT INTO subjects (watchlist, subject_id, external_ref, reason, source_agency, created_at)"
                " VALUES ('wanted', 'W-1', '', 'warrant', 'police', 0)")
    old.commit()
    old.close()
    with pytest.raises(StoreError, match="schema 1.*upgrade"):
        WatchlistStore.open_readonly(path, 5.0)
    store = WatchlistStore.open(path, 5.0)
    try:
        assert store.change_seq() == 3  # the upgrade changes no data: not on the feed, a saved index stays valid
        subject = store.subject("wanted", "W-1")
        assert subject.image_count == 0 and store.images_of(subject.row) == []
        assert store.unmigrated("any-model")["wanted"].without_images == frozenset({subject.row})
    finally:
        store.close()
    reopened = WatchlistStore.open(path, 5.0)
    try:
        assert reopened.change_seq() == 3  # opening an upgraded store changes nothing
        assert reopened._meta("schema_version") == SCHEMA_VERSION
    finally:
        reopened.close()


def test_lists_of_the_old_model_are_refused_until_migrated(
    settings: Settings, engine: FaceEngine, fusion_settings: Settings, fusion_engine: FaceEngine,
    photos: dict[str, Path], tmp_path: Path,
) -> None:
    assert fusion_engine.model_id != engine.model_id
    assert fusion_engine.embedder.dimension != engine.embedder.dimension
    _enrol_under_default(settings, engine, photos, tmp_path)
    probe = photos["obama3.jpg"].read_bytes()

    service = WatchlistService.open(local_settings(fusion_settings, tmp_path), fusion_engine)
    try:
        service.load()
        for lists in (None, ["wanted"], ["partner"], ["partner", "wanted"]):
            error = _refused(service.identify, probe, lists)
            assert error.reason is Reason.WATCHLIST_NEEDS_MIGRATION
        error = _refused(service.identify, probe, ["wanted"])
        assert error.details["watchlist"] == "wanted" and error.details["model_id"] == fusion_engine.model_id
        assert (error.details["unmigrated"], error.details["migratable"], error.details["without_images"]) == (
            "3", "2", "1")
        assert "verifier watchlist migrate" in error.message and "re-enrolled or removed" in error.message
        assert set(service.unmigrated) == {"wanted", "partner"}
    finally:
        service.close()

    stats = _cli(tmp_path, "stats")
    assert "NEEDS MIGRATION wanted: 3 subjects" in stats.stdout and "NEEDS MIGRATION partner: 1" in stats.stdout

    migrated = _cli(tmp_path, "migrate")
    assert migrated.returncode == 1, migrated.stderr  # one subject cannot be migrated
    assert "0 subjects already have its templates (skipped), 3 migrated" in migrated.stdout
    assert "1 cannot be migrated (enrolled without images)" in migrated.stdout
    assert "wanted/bare: templates of " + engine.model_id in migrated.stdout
    assert "migrating to" in migrated.stderr  # the progress bar

    service = WatchlistService.open(local_settings(fusion_settings, tmp_path), fusion_engine)
    try:
        service.load()
        found = service.identify(probe, ["partner"])
        assert [c.subject.entry.subject_id for c in found.candidates] == ["obama"]
        assert _refused(service.identify, probe, ["wanted"]).details["without_images"] == "1"
        assert _refused(service.identify, probe).reason is Reason.WATCHLIST_NEEDS_MIGRATION
        obama = service.subject("wanted", "obama")
        assert obama.model_ids == (fusion_engine.model_id,) and obama.template_count == 2  # old ones replaced
        service.remove("wanted", "bare")  # what the operator is told to do
        found = service.identify(probe)
        hits = {(c.subject.entry.watchlist, c.subject.entry.subject_id) for c in found.candidates}
        assert hits == {("partner", "obama"), ("wanted", "obama")}
        assert service.unmigrated == {}
    finally:
        service.close()

    trail = settings.audit.file(tmp_path)
    assert verify_chain(trail).intact
    migrations = [(r.targets, r.outcome) for r in read_records(trail, RecordFilter()) if "migrate" in r.rpc]
    assert migrations == [(t, o) for t in (("wanted/obama",), ("wanted/biden",), ("partner/obama",))
                          for o in ("STARTED", "OK")]

    again = _cli(tmp_path, "migrate")
    assert again.returncode == 0 and "3 subjects already have its templates (skipped), 0 migrated" in again.stdout


def test_identify_over_grpc_names_the_list_to_migrate(
    settings: Settings, engine: FaceEngine, fusion_settings: Settings, fusion_engine: FaceEngine,
    photos: dict[str, Path], tmp_path: Path,
) -> None:
    from verifier.app import build_service, start_server

    _enrol_under_default(settings, engine, photos, tmp_path)
    local = local_settings(fusion_settings, tmp_path)
    local.server.host, local.server.port = "127.0.0.1", 0
    running = start_server(local, build_service(local, fusion_engine))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = wl_grpc.WatchlistStub(channel)
            deadline = time.monotonic() + 30
            while not running.watchlist.ready and time.monotonic() < deadline:  # type: ignore[union-attr]
                time.sleep(0.05)
            request = wl.IdentifyRequest(probe=pb.FaceSample(image=pb.Image(data=photos["obama3.jpg"].read_bytes())),
                                         watchlists=["wanted"])
            with pytest.raises(grpc.RpcError) as caught:
                stub.Identify(request, timeout=30)
    finally:
        running.stop(grace=1.0)
    error = caught.value
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert dict(error.trailing_metadata())["verifier-reason"] == "WATCHLIST_NEEDS_MIGRATION"
    assert "'wanted'" in error.details()


def test_an_interrupted_migration_resumes(
    settings: Settings, engine: FaceEngine, fusion_engine: FaceEngine, photos: dict[str, Path], tmp_path: Path
) -> None:
    service = WatchlistService.open(local_settings(settings, tmp_path), engine)
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
    try:
        service.load()
        service.create_watchlist("wanted", "")
        for i in range(48):
            service.enrol(_entry("wanted", f"W-{i}"), [photos[names[i % 4]].read_bytes()])
    finally:
        service.close()
    path = settings.watchlist.store_file(tmp_path)

    def models() -> list[tuple[str, ...]]:
        store = WatchlistStore.open_readonly(path, 5.0)
        try:
            return [s.model_ids for s in store.subjects("wanted")]
        finally:
            store.close()

    env = {**os.environ, "VERIFIER_DATA_DIR": str(tmp_path), "VERIFIER_MODELS__PACK": FUSION}
    running = subprocess.Popen([sys.executable, "-m", "verifier.cli", "watchlist", "migrate"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and running.poll() is None:
            if any(found == (fusion_engine.model_id,) for found in models()):
                break
            time.sleep(0.02)
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait()
    after_kill = models()
    # Each subject is wholly of one model: never half migrated.
    assert set(after_kill) <= {(engine.model_id,), (fusion_engine.model_id,)}
    done = after_kill.count((fusion_engine.model_id,))
    assert done >= 1

    resumed = _cli(tmp_path, "migrate")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{done} subjects already have its templates (skipped), {48 - done} migrated" in resumed.stdout
    assert set(models()) == {(fusion_engine.model_id,)}
