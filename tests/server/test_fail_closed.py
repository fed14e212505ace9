"""Fail-closed starts and store faults, with real server processes.

A watch-list store that is missing, is not a store, or fails at run time (a
file-size limit on the server process: the disk is full) takes only the
Watchlist service out of service, with a reason on every call; FaceVerifier
keeps answering, and the watch-lists come back by themselves once the limit
is lifted (tests/server/test_storage_faults.py: the whole disk). A missing store is never replaced by an empty one, and the
service comes back by itself once an operator creates or restores it. Damaged
template rows are quarantined while the rest of the list serves, across
SIGKILL restarts. Nonsense settings stop the start, naming the setting.
"""

from __future__ import annotations

import resource
import signal
import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.processes import NOT_SERVING, SERVING, cli, serving
from verifier.client import reason_of
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

pytestmark = pytest.mark.slow

WATCHLIST = "verifier.v1.Watchlist"
FACE_VERIFIER = "verifier.v1.FaceVerifier"
FAST_RETRY = {"VERIFIER_WATCHLIST__STORE_RETRY_SECONDS": "0.2"}
# The server may write this much into any one file; the store's WAL outgrows it
# after some dozens of enrolments, as a full disk would stop it.
FILE_SIZE_LIMIT = 1024 * 1024


def _verify(channel: grpc.Channel, photos: dict[str, Path]) -> pb.VerifyResponse:
    stub = pb_grpc.FaceVerifierStub(channel)
    return stub.Verify(pb.VerifyRequest(
        probe=pb.Image(data=photos["obama.jpg"].read_bytes()),
        reference=pb.FaceSample(image=pb.Image(data=photos["obama2.jpg"].read_bytes()))), timeout=60)


def _refusal(call, request) -> grpc.RpcError:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def _templates(engine: FaceEngine, count: int, seed: int) -> list[pb.FaceSample]:
    vectors = np.random.default_rng(seed).standard_normal((count, engine.embedder.dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [pb.FaceSample(template=pb.Template(model_id=engine.model_id, version=1, dimension=len(v),
                                               vector=v.astype("<f4").tobytes())) for v in vectors]


def test_a_missing_store_is_never_replaced_and_verify_serves_on(tmp_path: Path, photos: dict[str, Path]) -> None:
    store = tmp_path / "watchlist" / "store.sqlite3"
    with serving(tmp_path, FAST_RETRY) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, NOT_SERVING)
        assert _verify(channel, photos).match
        stub = wl_grpc.WatchlistStub(channel)
        for call, request in ((stub.Identify, wl.IdentifyRequest(probe=_templates_probe(photos, channel))),
                              (stub.ListWatchlists, wl.ListWatchlistsRequest()),
                              (stub.CreateWatchlist, wl.CreateWatchlistRequest(name="wanted"))):
            error = _refusal(call, request)
            assert (error.code(), reason_of(error)) == (grpc.StatusCode.UNAVAILABLE, "STORE_MISSING")
        assert not store.exists()
        assert "STORE_MISSING" in server.log
        created = cli(tmp_path, "watchlist", "init")
        assert created.returncode == 0, created.stderr
        server.wait_health(channel, WATCHLIST, SERVING, timeout=30)
        stub.CreateWatchlist(wl.CreateWatchlistRequest(name="wanted"), timeout=10)
    again = cli(tmp_path, "watchlist", "init")
    assert again.returncode == 2 and "exists" in again.stderr


def _templates_probe(photos: dict[str, Path], channel: grpc.Channel) -> pb.FaceSample:
    stub = pb_grpc.FaceVerifierStub(channel)
    made = stub.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=photos["obama.jpg"].read_bytes())),
                                timeout=60)
    return pb.FaceSample(template=made.template)


def test_a_file_that_is_not_a_store_takes_out_only_the_watchlists(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    store = tmp_path / "watchlist" / "store.sqlite3"
    store.parent.mkdir()
    store.write_bytes(b"\x00garbage, not SQLite" * 500)
    # A file at the store's path without a trail beside it is served only once a trail is begun on purpose.
    assert cli(tmp_path, "audit", "begin", "--reason", "a damaged disk, ticket 1").returncode == 0
    with serving(tmp_path, FAST_RETRY) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, NOT_SERVING)
        assert server.health(channel, FACE_VERIFIER) == SERVING
        assert _verify(channel, photos).match
        error = _refusal(wl_grpc.WatchlistStub(channel).Identify,
                         wl.IdentifyRequest(probe=_templates_probe(photos, channel)))
        assert (error.code(), reason_of(error)) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
    assert store.read_bytes().startswith(b"\x00garbage")


def test_a_store_failing_at_run_time_stops_only_the_watchlists(
    tmp_path: Path, settings: Settings, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    assert cli(tmp_path, "watchlist", "init").returncode == 0
    # A soft limit only: the test lifts it from outside (prlimit) as space is freed.
    with serving(tmp_path, FAST_RETRY, file_size_limit=FILE_SIZE_LIMIT) as server, \
            grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        stub.CreateWatchlist(wl.CreateWatchlistRequest(name="wanted"), timeout=10)
        acknowledged, failure = [], None
        for number in range(2000):
            request = wl.EnrollSubjectRequest(subject=wl.Subject(watchlist="wanted", subject_id=f"S-{number}"),
                                              samples=_templates(engine, 16, seed=number))
            try:
                stub.EnrollSubject(request, timeout=30)
            except grpc.RpcError as error:
                failure = error
                break
            acknowledged.append(number)
        assert failure is not None, "the file-size limit never stopped a write"
        assert (failure.code(), reason_of(failure)) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
        assert len(acknowledged) >= 3
        assert server.health(channel, WATCHLIST) == NOT_SERVING
        probe = _templates(engine, 1, seed=acknowledged[0])[0]
        error = _refusal(stub.Identify, wl.IdentifyRequest(probe=probe))
        assert (error.code(), reason_of(error)) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
        assert server.health(channel, FACE_VERIFIER) == SERVING
        assert _verify(channel, photos).match
        assert server.process.poll() is None
        # Space freed: the store is taken up again without a restart, and takes writes.
        resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        server.wait_health(channel, WATCHLIST, SERVING, timeout=30)
        recovered = acknowledged[-1] + 1
        stub.EnrollSubject(wl.EnrollSubjectRequest(subject=wl.Subject(watchlist="wanted", subject_id=f"S-{recovered}"),
                                                   samples=_templates(engine, 16, seed=recovered)), timeout=30)
        acknowledged.append(recovered)
        server.process.send_signal(signal.SIGKILL)
    with serving(tmp_path, FAST_RETRY) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        for number in (acknowledged[0], acknowledged[-2], acknowledged[-1]):
            found = stub.Identify(wl.IdentifyRequest(probe=_templates(engine, 1, seed=number)[0], top_k=1),
                                  timeout=30)
            assert [c.subject_id for c in found.candidates] == [f"S-{number}"]


def test_damaged_rows_are_quarantined_across_sigkill_restarts(tmp_path: Path, engine: FaceEngine) -> None:
    assert cli(tmp_path, "watchlist", "init").returncode == 0
    with serving(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        stub.CreateWatchlist(wl.CreateWatchlistRequest(name="wanted"), timeout=10)
        for number in range(4):
            stub.EnrollSubject(wl.EnrollSubjectRequest(
                subject=wl.Subject(watchlist="wanted", subject_id=f"S-{number}"),
                samples=_templates(engine, 1, seed=number)), timeout=30)
        server.process.send_signal(signal.SIGKILL)
    with sqlite3.connect(tmp_path / "watchlist" / "store.sqlite3") as conn:
        conn.execute("UPDATE templates SET vector = zeroblob(256) WHERE subject ="
                     " (SELECT id FROM subjects WHERE subject_id = 'S-2')")
    for _ in range(2):
        with serving(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
            server.wait_health(channel, WATCHLIST, SERVING)
            stub = wl_grpc.WatchlistStub(channel)
            for number in range(4):
                found = stub.Identify(wl.IdentifyRequest(probe=_templates(engine, 1, seed=number)[0], top_k=1),
                                      timeout=30)
                assert [c.subject_id for c in found.candidates] == ([] if number == 2 else [f"S-{number}"])
            assert "quarantined template 0 of subject 'S-2'" in server.log
            server.process.send_signal(signal.SIGKILL)
    stats = cli(tmp_path, "watchlist", "stats")
    assert stats.returncode == 0, stats.stderr
    assert "quarantined templates of" in stats.stdout and "wanted/S-2 template 0: TEMPLATE_MALFORMED" in stats.stdout


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("VERIFIER_MATCHING__TARGET_FMR", "1.5", "matching.target_fmr"),
        ("VERIFIER_MATCHING__TARGET_FMR", "0", "matching.target_fmr"),
        ("VERIFIER_MATCHING__DEFAULT_THRESHOLD", "nan", "matching.default_threshold"),
        ("VERIFIER_WATCHLIST__THRESHOLD", "-1.5", "watchlist.threshold"),
        ("VERIFIER_WATCHLIST__THRESHOLD_FPIR", "0", "watchlist.threshold_fpir"),
        ("VERIFIER_DETECTOR__MIN_SCORE", "inf", "detector.min_score"),
        ("VERIFIER_SERVER__PORT", "70000", "server.port"),
        ("VERIFIER_ADMISSION__RETRY_AFTER_MAX_SECONDS", "0", "admission.retry_after_max_seconds"),
        ("VERIFIER_ADMISSION__HEAVY_WEIGHT_MAX", "0.5", "admission.heavy_weight_max"),
        ("VERIFIER_DETECTOR__FLOOR_INPUT_EYE_PX", "nan", "detector.floor_input_eye_px"),
        ("VERIFIER_DETECTOR__MAX_INPUT_PIXELS", "100", "detector.max_input_pixels"),
        ("VERIFIER_DETECTOR__REGION_CONTEXT", "0.5", "detector.region_context"),
        ("VERIFIER_DETECTOR__REGION_JITTER_LOOKS", "3", "detector.region_jitter_looks"),
        ("VERIFIER_DETECTOR__REGION_JITTER", "nan", "detector.region_jitter"),
        ("VERIFIER_REGISTRY__LAST_USED_FLUSH_SECONDS", "0", "registry.last_used_flush_seconds"),
        ("VERIFIER_REGISTRY__IVF_NPROBE", "0", "registry.ivf_nprobe"),
    ],
)
def test_nonsense_settings_stop_the_start(tmp_path: Path, variable: str, value: str, named: str) -> None:
    result = cli(tmp_path, "serve", env={variable: value})
    assert result.returncode == 2 and named in result.stderr and variable in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_inconsistent_admission_bounds_stop_the_start(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve", env={"VERIFIER_ADMISSION__RETRY_AFTER_MIN_SECONDS": "6"})
    assert result.returncode == 2 and "VERIFIER_ADMISSION" in result.stderr, result.stderr
    assert "retry_after_min_seconds (6.0) exceeds retry_after_max_seconds" in result.stderr
    assert "Traceback" not in result.stderr


def test_another_models_calibration_or_a_missing_model_stops_the_start(tmp_path: Path, settings: Settings) -> None:
    foreign = tmp_path / "foreign.json"
    foreign.write_text((settings.matching.calibration_dir / "fusion.json").read_text())
    result = cli(tmp_path, "serve", env={"VERIFIER_MATCHING__CALIBRATION_FILE": str(foreign)})
    assert result.returncode == 2 and "was made for" in result.stderr, result.stderr
    result = cli(tmp_path, "serve", env={"VERIFIER_MODELS__CACHE_DIR": str(tmp_path / "empty")})
    assert result.returncode == 2 and "is missing" in result.stderr, result.stderr


def test_settings_that_change_templates_stop_the_start_with_a_table_measured_without_them(tmp_path: Path) -> None:
    """Averaged looks or mirror embedding served with the shipped tables (measured
    with both off) would decide at thresholds measured on other templates."""
    for variable, named in (("VERIFIER_DETECTOR__REGION_JITTER_LOOKS", "pipeline.region_jitter_looks"),
                            ("VERIFIER_PIPELINE__EMBED_MIRROR", "pipeline.embed_mirror")):
        result = cli(tmp_path, "serve", env={variable: "2" if "LOOKS" in variable else "true"})
        assert result.returncode == 2 and f"key {named} records" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
