"""Hostile input to the Watchlist and FaceVerifier APIs over a real socket:
malformed templates, oversized or invalid text, out-of-range timestamps and
unparseable bytes are refused with a reason, nothing of them is stored, and the
server goes on serving (listing included)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from verifier.client import reason_of
from verifier.pipeline import FaceEngine
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

LIST = "validation"


@pytest.fixture(scope="module")
def stub(watchlist_channel: grpc.Channel) -> wl_grpc.WatchlistStub:
    health = health_pb2_grpc.HealthStub(watchlist_channel)
    deadline = time.monotonic() + 30
    while health.Check(health_pb2.HealthCheckRequest(service="verifier.v1.Watchlist"), timeout=5).status != (
        health_pb2.HealthCheckResponse.SERVING
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    made = wl_grpc.WatchlistStub(watchlist_channel)
    made.CreateWatchlist(wl.CreateWatchlistRequest(name=LIST), timeout=5)
    return made


def _refused(call, request, code: grpc.StatusCode, reason: str) -> grpc.RpcError:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    assert (caught.value.code(), reason_of(caught.value)) == (code, reason), caught.value.details()
    return caught.value


def _template(model_id: str, vector: np.ndarray, dimension: int | None = None) -> pb.Template:
    data = vector.astype("<f4").tobytes()
    return pb.Template(model_id=model_id, version=1, dimension=dimension or len(vector), vector=data)


def _unit(dimension: int, seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dimension)
    return vector / np.linalg.norm(vector)


def _malformed(engine: FaceEngine) -> dict[str, pb.Template]:
    model, dimension = engine.model_id, engine.embedder.dimension
    return {
        "wrong dimension": _template(model, _unit(64, 1)),
        "one value": _template(model, np.ones(1)),
        "not unit": _template(model, _unit(dimension, 2) * 3),
        "nan": _template(model, np.full(dimension, np.nan)),
        "length lies": _template(model, _unit(dimension, 3), dimension=dimension - 1),
        "model id not an id": _template("mobile face net\n", _unit(dimension, 4)),
    }


def _subject(subject_id: str, **fields: str) -> wl.Subject:
    return wl.Subject(watchlist=LIST, subject_id=subject_id, reason=fields.get("reason", "warrant"),
                      source_agency=fields.get("source_agency", "police"),
                      external_reference=fields.get("external_reference", ""))


def test_malformed_templates_are_refused_everywhere_and_never_stored(
    stub: wl_grpc.WatchlistStub, watchlist_channel: grpc.Channel, engine: FaceEngine
) -> None:
    verifier = pb_grpc.FaceVerifierStub(watchlist_channel)
    good = _template(engine.model_id, _unit(engine.embedder.dimension, 9))
    for number, (case, bad) in enumerate(_malformed(engine).items()):
        sid = f"T-{number}"
        enrol = wl.EnrollSubjectRequest(subject=_subject(sid), samples=[pb.FaceSample(template=good),
                                                                        pb.FaceSample(template=bad)])
        _refused(stub.EnrollSubject, enrol, grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_MALFORMED")
        _refused(stub.GetSubject, wl.GetSubjectRequest(watchlist=LIST, subject_id=sid), grpc.StatusCode.NOT_FOUND,
                 "SUBJECT_NOT_FOUND")
        for a, b in ((bad, good), (good, bad), (bad, bad)):
            _refused(verifier.CompareTemplates, pb.CompareTemplatesRequest(a=a, b=b),
                     grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_MALFORMED")
        _refused(stub.Identify, wl.IdentifyRequest(probe=pb.FaceSample(template=bad)),
                 grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_MALFORMED")
        _refused(verifier.Verify, pb.VerifyRequest(probe=pb.Image(data=b"x"), reference=pb.FaceSample(template=bad)),
                 grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_MALFORMED")
    listed = {w.name: w for w in stub.ListWatchlists(wl.ListWatchlistsRequest(), timeout=5).watchlists}
    assert listed[LIST].template_count == 0, case


@pytest.mark.parametrize(
    ("request_of", "field"),
    [
        (lambda: wl.CreateWatchlistRequest(name="n" * 129), "name"),
        (lambda: wl.CreateWatchlistRequest(name="has space"), "name"),
        (lambda: wl.CreateWatchlistRequest(name="ok-name", description="d" * 1025), "description"),
        (lambda: wl.CreateWatchlistRequest(name="ok-name", description="bell\a"), "description"),
        (lambda: wl.EnrollSubjectRequest(subject=_subject("S-1", reason="r" * 1_000_000)), "subject.reason"),
        (lambda: wl.EnrollSubjectRequest(subject=_subject("S-1", source_agency="a\nb")), "subject.source_agency"),
        (lambda: wl.EnrollSubjectRequest(subject=_subject("S-1", external_reference="\x00")),
         "subject.external_reference"),
        (lambda: wl.EnrollSubjectRequest(subject=_subject("../../etc/passwd")), "subject.subject_id"),
        (lambda: wl.EnrollSubjectRequest(subject=wl.Subject(watchlist=LIST, subject_id="S-1",
                                                            expires=Timestamp(seconds=10**15))), "subject.expires"),
        (lambda: wl.EnrollSubjectRequest(subject=wl.Subject(watchlist=LIST, subject_id="S-1",
                                                            expires=Timestamp(seconds=0, nanos=-5))),
         "subject.expires"),
        (lambda: wl.GetSubjectRequest(watchlist=LIST, subject_id="x" * 200), "subject_id"),
        (lambda: wl.RemoveSubjectRequest(watchlist="bad list", subject_id="S-1"), "watchlist"),
        (lambda: wl.DeleteWatchlistRequest(name="\u202eevil"), "name"),
    ],
)
def test_text_fields_out_of_bounds_are_refused_naming_the_field(
    stub: wl_grpc.WatchlistStub, photos: dict[str, Path], request_of, field: str  # noqa: ANN001
) -> None:
    request = request_of()
    if isinstance(request, wl.EnrollSubjectRequest):
        request.samples.append(pb.FaceSample(image=pb.Image(data=photos["biden.jpg"].read_bytes())))
    method = {
        wl.CreateWatchlistRequest: stub.CreateWatchlist, wl.EnrollSubjectRequest: stub.EnrollSubject,
        wl.GetSubjectRequest: stub.GetSubject, wl.RemoveSubjectRequest: stub.RemoveSubject,
        wl.DeleteWatchlistRequest: stub.DeleteWatchlist,
    }[type(request)]
    error = _refused(method, request, grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert ("field", field) in tuple(error.trailing_metadata()) or field in error.details()
    assert [w.name for w in stub.ListWatchlists(wl.ListWatchlistsRequest(), timeout=5).watchlists]


def test_bytes_that_are_not_utf8_get_a_reason_not_internal(
    stub: wl_grpc.WatchlistStub, watchlist_channel: grpc.Channel
) -> None:
    raw = watchlist_channel.unary_unary("/verifier.v1.Watchlist/CreateWatchlist", request_serializer=None,
                                        response_deserializer=wl.CreateWatchlistResponse.FromString)
    name = b"ok-list"
    description = b"\xff\xfe not utf-8"
    message = b"\x0a" + bytes([len(name)]) + name + b"\x12" + bytes([len(description)]) + description
    _refused(raw, message, grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert "ok-list" not in {w.name for w in stub.ListWatchlists(wl.ListWatchlistsRequest(), timeout=5).watchlists}


def test_delete_watchlist_refuses_non_empty_lists_unless_forced(
    stub: wl_grpc.WatchlistStub, photos: dict[str, Path]
) -> None:
    stub.CreateWatchlist(wl.CreateWatchlistRequest(name="to-delete"), timeout=5)
    probe = pb.FaceSample(image=pb.Image(data=photos["biden.jpg"].read_bytes()))
    stub.EnrollSubject(wl.EnrollSubjectRequest(subject=wl.Subject(watchlist="to-delete", subject_id="D-1"),
                                               samples=[probe]), timeout=30)
    _refused(stub.DeleteWatchlist, wl.DeleteWatchlistRequest(name="to-delete"), grpc.StatusCode.FAILED_PRECONDITION,
             "WATCHLIST_NOT_EMPTY")
    assert [c.subject_id for c in stub.Identify(wl.IdentifyRequest(probe=probe, watchlists=["to-delete"]),
                                                timeout=30).candidates] == ["D-1"]
    deleted = stub.DeleteWatchlist(wl.DeleteWatchlistRequest(name="to-delete", force=True), timeout=10).watchlist
    assert (deleted.name, deleted.subject_count) == ("to-delete", 1)
    _refused(stub.Identify, wl.IdentifyRequest(probe=probe, watchlists=["to-delete"]), grpc.StatusCode.NOT_FOUND,
             "WATCHLIST_NOT_FOUND")
    assert all(c.watchlist != "to-delete" for c in stub.Identify(wl.IdentifyRequest(probe=probe), timeout=30).candidates)
    for request, call in ((wl.DeleteWatchlistRequest(name="to-delete"), stub.DeleteWatchlist),
                          (wl.GetSubjectRequest(watchlist="to-delete", subject_id="D-1"), stub.GetSubject),
                          (wl.RemoveSubjectRequest(watchlist="to-delete", subject_id="D-1"), stub.RemoveSubject)):
        _refused(call, request, grpc.StatusCode.NOT_FOUND, "WATCHLIST_NOT_FOUND")
