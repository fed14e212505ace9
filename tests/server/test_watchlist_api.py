"""The Watchlist API through a real channel to the real server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.watchlist.samples import local_settings
from verifier.client import reason_of
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.service import WatchlistService
from verifier.templates import TemplateSpec

WATCHLIST = "verifier.v1.Watchlist"


def _wait_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while health.Check(health_pb2.HealthCheckRequest(service=WATCHLIST), timeout=5).status != (
        health_pb2.HealthCheckResponse.SERVING
    ):
        assert time.monotonic() < deadline, "the watch-list index never became ready"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stub(watchlist_channel: grpc.Channel) -> wl_grpc.WatchlistStub:
    _wait_serving(watchlist_channel)
    return wl_grpc.WatchlistStub(watchlist_channel)


def _image(path: Path) -> pb.FaceSample:
    return pb.FaceSample(image=pb.Image(data=path.read_bytes()))


def _subject(watchlist: str, subject_id: str, expires: datetime | None = None) -> wl.Subject:
    subject = wl.Subject(
        watchlist=watchlist, subject_id=subject_id, reason="arrest warrant", source_agency="partner police",
        external_reference=f"case-{subject_id}",
    )
    if expires is not None:
        subject.expires.CopyFrom(Timestamp(seconds=int(expires.timestamp()), nanos=expires.microsecond * 1000))
    return subject


def _refusal(call, request) -> grpc.RpcError:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def _identify(stub: wl_grpc.WatchlistStub, probe: pb.FaceSample, *lists: str) -> wl.IdentifyResponse:
    return stub.Identify(wl.IdentifyRequest(probe=probe, watchlists=list(lists)), timeout=30)


def _faceless(photo: Path) -> pb.FaceSample:
    wall = cv2.imread(str(photo))[:60, :60].copy().repeat(8, 0).repeat(8, 1)
    return pb.FaceSample(image=pb.Image(data=cv2.imencode(".jpg", wall)[1].tobytes()))


def test_health_and_reflection_name_the_watchlist(watchlist_channel: grpc.Channel) -> None:
    _wait_serving(watchlist_channel)
    reflect = reflection_pb2_grpc.ServerReflectionStub(watchlist_channel)
    replies = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    assert WATCHLIST in {s.name for reply in replies for s in reply.list_services_response.service}


def test_enrol_identify_get_remove(
    stub: wl_grpc.WatchlistStub, photos: dict[str, Path], template_spec: TemplateSpec
) -> None:
    created = stub.CreateWatchlist(wl.CreateWatchlistRequest(name="wanted", description="arrest warrants"), timeout=5)
    assert created.watchlist.name == "wanted" and created.watchlist.created.seconds > 0
    enrolled = stub.EnrollSubject(
        wl.EnrollSubjectRequest(
            subject=_subject("wanted", "W-1"), samples=[_image(photos["obama.jpg"]), _image(photos["obama2.jpg"])]
        ),
        timeout=30,
    )
    assert [s.enrolled for s in enrolled.samples] == [True, True]
    assert all(len(s.face.landmarks) == 5 for s in enrolled.samples)
    assert enrolled.subject.template_count == 2 and enrolled.subject.model_ids[0] == template_spec.model_id
    assert "store" in {t.stage for t in enrolled.timings}

    hit = _identify(stub, _image(photos["obama3.jpg"]), "wanted")
    assert [(c.rank, c.subject_id, c.watchlist) for c in hit.candidates] == [(1, "W-1", "wanted")]
    top = hit.candidates[0]
    assert top.score >= hit.threshold and top.reason == "arrest warrant" and top.source_agency == "partner police"
    assert top.external_reference == "case-W-1"
    assert 0 < hit.false_positive_identification_rate < 0.1 and hit.threshold_source
    assert hit.probe_face.faces_detected == 1 and hit.gallery_size >= 2
    assert {"detect", "embed", "search"} <= {t.stage for t in hit.timings}
    assert not _identify(stub, _image(photos["biden.jpg"]), "wanted").candidates

    got = stub.GetSubject(wl.GetSubjectRequest(watchlist="wanted", subject_id="W-1"), timeout=5).subject
    assert got.template_count == 2 and got.reason == "arrest warrant" and not got.HasField("expires")
    listed = {w.name: w for w in stub.ListWatchlists(wl.ListWatchlistsRequest(), timeout=5).watchlists}
    assert listed["wanted"].subject_count == 1 and listed["wanted"].template_count == 2

    stub.RemoveSubject(wl.RemoveSubjectRequest(watchlist="wanted", subject_id="W-1"), timeout=5)
    assert not _identify(stub, _image(photos["obama3.jpg"]), "wanted").candidates
    error = _refusal(stub.GetSubject, wl.GetSubjectRequest(watchlist="wanted", subject_id="W-1"))
    assert error.code() is grpc.StatusCode.NOT_FOUND and reason_of(error) == "SUBJECT_NOT_FOUND"


def test_template_enrolment_and_search_per_list_or_across(
    stub: wl_grpc.WatchlistStub, watchlist_channel: grpc.Channel, photos: dict[str, Path]
) -> None:
    verifier = pb_grpc.FaceVerifierStub(watchlist_channel)
    chip = verifier.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=photos["obama.jpg"].read_bytes())),
                                    timeout=30).template
    for name in ("no-entry", "partner"):
        stub.CreateWatchlist(wl.CreateWatchlistRequest(name=name), timeout=5)
        enrolled = stub.EnrollSubject(
            wl.EnrollSubjectRequest(subject=_subject(name, "P-7"), samples=[pb.FaceSample(template=chip)]), timeout=30
        )
        assert enrolled.samples[0].enrolled and not enrolled.samples[0].HasField("face")
    probe = _image(photos["obama3.jpg"])
    across = _identify(stub, probe)
    assert sorted(c.watchlist for c in across.candidates if c.subject_id == "P-7") == ["no-entry", "partner"]
    assert [c.rank for c in across.candidates] == list(range(1, len(across.candidates) + 1))
    assert [c.score for c in across.candidates] == sorted((c.score for c in across.candidates), reverse=True)
    only = _identify(stub, probe, "partner")
    assert [(c.watchlist, c.subject_id) for c in only.candidates] == [("partner", "P-7")]
    assert only.gallery_size < across.gallery_size
    by_template = stub.Identify(wl.IdentifyRequest(probe=pb.FaceSample(template=chip), watchlists=["partner"]),
                                timeout=30)
    assert by_template.candidates[0].score == pytest.approx(1.0, abs=1e-5)
    assert not by_template.HasField("probe_face")


def test_refusals_carry_status_and_reason(stub: wl_grpc.WatchlistStub, photos: dict[str, Path]) -> None:
    stub.CreateWatchlist(wl.CreateWatchlistRequest(name="banned"), timeout=5)
    error = _refusal(stub.CreateWatchlist, wl.CreateWatchlistRequest(name="banned"))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS and reason_of(error) == "WATCHLIST_EXISTS"
    enrol = wl.EnrollSubjectRequest(subject=_subject("banned", "B-1"), samples=[_image(photos["biden.jpg"])])
    stub.EnrollSubject(enrol, timeout=30)
    error = _refusal(stub.EnrollSubject, enrol)
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS and reason_of(error) == "SUBJECT_EXISTS"
    error = _refusal(stub.EnrollSubject, wl.EnrollSubjectRequest(
        subject=_subject("nowhere", "X"), samples=[_image(photos["biden.jpg"])]))
    assert error.code() is grpc.StatusCode.NOT_FOUND and reason_of(error) == "WATCHLIST_NOT_FOUND"
    error = _refusal(stub.Identify, wl.IdentifyRequest(probe=_image(photos["biden.jpg"]), watchlists=["nowhere"]))
    assert error.code() is grpc.StatusCode.NOT_FOUND and reason_of(error) == "WATCHLIST_NOT_FOUND"
    error = _refusal(stub.RemoveSubject, wl.RemoveSubjectRequest(watchlist="banned", subject_id="nobody"))
    assert error.code() is grpc.StatusCode.NOT_FOUND and reason_of(error) == "SUBJECT_NOT_FOUND"
    error = _refusal(stub.EnrollSubject, wl.EnrollSubjectRequest(subject=_subject("banned", "B-2")))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and reason_of(error) == "REQUEST_INCOMPLETE"


def test_foreign_templates_are_refused(
    stub: wl_grpc.WatchlistStub, settings: Settings, template_spec: TemplateSpec
) -> None:
    stub.CreateWatchlist(wl.CreateWatchlistRequest(name="foreign"), timeout=5)
    unit = (b"\x00\x00\x80\x3f" + b"\x00" * 4 * (template_spec.dimension - 1))
    foreign = pb.FaceSample(template=pb.Template(model_id="faceplugin-feature-512:84fd65a16b57", version=1,
                                                 dimension=template_spec.dimension, vector=unit))
    error = _refusal(stub.EnrollSubject, wl.EnrollSubjectRequest(subject=_subject("foreign", "F-1"), samples=[foreign]))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and reason_of(error) == "TEMPLATE_MODEL_MISMATCH"
    error = _refusal(stub.Identify, wl.IdentifyRequest(probe=foreign))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and reason_of(error) == "TEMPLATE_MODEL_MISMATCH"
    error = _refusal(stub.GetSubject, wl.GetSubjectRequest(watchlist="foreign", subject_id="F-1"))
    assert error.code() is grpc.StatusCode.NOT_FOUND


def test_an_image_without_a_face_fails_the_enrolment_unless_partial(
    stub: wl_grpc.WatchlistStub, photos: dict[str, Path]
) -> None:
    stub.CreateWatchlist(wl.CreateWatchlistRequest(name="partial"), timeout=5)
    samples = [_image(photos["obama.jpg"]), _faceless(photos["obama.jpg"])]
    error = _refusal(stub.EnrollSubject, wl.EnrollSubjectRequest(subject=_subject("partial", "Q-1"), samples=samples))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and reason_of(error) == "NO_FACE"
    assert _refusal(stub.GetSubject, wl.GetSubjectRequest(watchlist="partial", subject_id="Q-1")).code() is (
        grpc.StatusCode.NOT_FOUND
    )
    enrolled = stub.EnrollSubject(
        wl.EnrollSubjectRequest(subject=_subject("partial", "Q-1"), samples=samples, allow_partial=True), timeout=30
    )
    assert [(s.index, s.enrolled, s.reason) for s in enrolled.samples] == [(0, True, ""), (1, False, "NO_FACE")]
    assert enrolled.subject.template_count == 1 and not enrolled.samples[1].HasField("face")


def test_an_expired_subject_is_never_returned(stub: wl_grpc.WatchlistStub, photos: dict[str, Path]) -> None:
    stub.CreateWatchlist(wl.CreateWatchlistRequest(name="expiring"), timeout=5)
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    stub.EnrollSubject(wl.EnrollSubjectRequest(subject=_subject("expiring", "E-1", expires),
                                               samples=[_image(photos["biden.jpg"])]), timeout=30)
    probe = _image(photos["biden.jpg"])
    assert [c.subject_id for c in _identify(stub, probe, "expiring").candidates] == ["E-1"]
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    assert not _identify(stub, probe, "expiring").candidates
    got = stub.GetSubject(wl.GetSubjectRequest(watchlist="expiring", subject_id="E-1"), timeout=5).subject
    assert got.expires.ToDatetime(UTC) <= datetime.now(UTC)


@pytest.fixture()
def held_index(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A server whose watch-list index cannot load until the test lets go of the
    service's write lock (which loading takes), so the not-ready window is certain."""
    from verifier.app import build_service, start_server

    local = local_settings(settings, tmp_path)
    local.server.host, local.server.port = "127.0.0.1", 0
    watchlist = WatchlistService.open(local, engine)
    held = threading.Event()
    watchlist._writes.acquire()
    held.set()

    def release() -> None:
        if held.is_set():
            held.clear()
            watchlist._writes.release()

    running = start_server(local, build_service(local, engine), watchlist)
    try:
        yield f"127.0.0.1:{running.port}", release
    finally:
        release()
        running.stop(grace=1.0)


def test_identify_before_the_index_is_ready_is_unavailable(
    held_index: tuple[str, Callable[[], None]], photos: dict[str, Path]
) -> None:
    address, release = held_index
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        state = health.Check(health_pb2.HealthCheckRequest(service=WATCHLIST), timeout=5).status
        assert state == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = wl_grpc.WatchlistStub(channel)
        error = _refusal(stub.Identify, wl.IdentifyRequest(probe=_image(photos["obama.jpg"])))
        assert error.code() is grpc.StatusCode.UNAVAILABLE and reason_of(error) == "INDEX_NOT_READY"
        release()
        _wait_serving(channel)
        assert not stub.Identify(wl.IdentifyRequest(probe=_image(photos["obama.jpg"])), timeout=30).candidates
