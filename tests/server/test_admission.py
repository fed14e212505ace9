"""Admission control through real channels to a real server on loopback, with
tight bounds so that one slow request (the costliest frame and chip photo) fills them."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from tests.conftest import loopback_server
from verifier.client import reason_of, retry_after
from verifier.config import Settings
from verifier.deadlines import Deadline
from verifier.edge_config import AdmissionSettings
from verifier.errors import Reason, VerifierError
from verifier.server.admission import Admission
from verifier.pipeline import FaceEngine
from verifier.server.errors import PUSHBACK_KEY, REASON_KEY
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc

WAIT_S = 10.0


@contextmanager
def admitting(settings: Settings, engine: FaceEngine, **limits: object) -> Iterator[str]:
    local = settings.model_copy(deep=True)
    # One image after the other, so the slow request holds its slot longer.
    local.pipeline.image_workers = 0
    local.admission = local.admission.model_copy(update={"enabled": True, **limits})
    with tempfile.TemporaryDirectory() as data_dir, loopback_server(local, engine, Path(data_dir),
                                                                    watchlist=False) as address:
        yield address


def _connection(address: str) -> grpc.Channel:
    """A channel with a connection of its own (channels in one process share one by default)."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _until(condition, what: str) -> None:  # noqa: ANN001
    end = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {WAIT_S} s: {what}")
        time.sleep(0.001)


def _slow(stub: pb_grpc.FaceVerifierStub, large: tuple[bytes, bytes]) -> grpc.Future:
    """Start a Verify of the costliest live frame against the costliest chip photo
    and return once it holds a slot."""
    running = _sample("verifier_admission_in_flight")
    frame, chip = large
    future = stub.Verify.future(
        pb.VerifyRequest(probe=pb.Image(data=frame), reference=pb.FaceSample(image=pb.Image(data=chip))), timeout=60
    )
    _until(lambda: _sample("verifier_admission_in_flight") > running or future.done(), "the slow call running")
    assert not future.done(), "the slow call ended before the test could use its slot"
    return future


def _small(photos: dict[str, Path]) -> pb.ExtractTemplateRequest:
    return pb.ExtractTemplateRequest(image=pb.Image(data=photos["obama.jpg"].read_bytes()))


def test_overloaded_at_once_when_the_server_is_full_while_health_still_answers(
    settings: Settings, engine: FaceEngine, photos: dict[str, Path], large_photo: bytes, large_chip: bytes
) -> None:
    with admitting(settings, engine, max_in_flight=1, max_queue=0, caller_key="connection") as address, \
            _connection(address) as first, _connection(address) as second:
        shed = _sample("verifier_admission_shed_total", {"method": "ExtractTemplate", "bound": "server"})
        holder = _slow(pb_grpc.FaceVerifierStub(first), (large_photo, large_chip))
        started = time.perf_counter()
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.FaceVerifierStub(second).ExtractTemplate(_small(photos), timeout=30)
        elapsed = time.perf_counter() - started
        assert not holder.done(), "the refusal waited for the running call"
        health = health_pb2_grpc.HealthStub(second).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert holder.result().match
    error = refused.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) == "OVERLOADED"
    assert (REASON_KEY, "OVERLOADED") in error.trailing_metadata()
    limits = settings.admission
    hinted = retry_after(error)
    assert hinted is not None and limits.retry_after_min_seconds <= hinted <= limits.retry_after_max_seconds
    assert (PUSHBACK_KEY, str(round(hinted * 1000))) in error.trailing_metadata()
    assert elapsed < 0.5
    assert _sample("verifier_admission_shed_total", {"method": "ExtractTemplate", "bound": "server"}) == shed + 1


def test_a_caller_over_its_share_is_refused_while_another_caller_gets_through(
    settings: Settings, engine: FaceEngine, photos: dict[str, Path], large_photo: bytes, large_chip: bytes
) -> None:
    with admitting(
        settings, engine, max_in_flight=2, max_queue=2, max_per_caller=1, caller_key="connection"
    ) as address, _connection(address) as bulk, _connection(address) as gate:
        holder = _slow(pb_grpc.FaceVerifierStub(bulk), (large_photo, large_chip))
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.FaceVerifierStub(bulk).ExtractTemplate(_small(photos), timeout=30)
        served = pb_grpc.FaceVerifierStub(gate).ExtractTemplate(_small(photos), timeout=30)
        assert not holder.done(), "the other caller was only served after the bulk call ended"
        assert holder.result().match
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(refused.value) == "OVERLOADED"
    assert served.template.dimension == engine.embedder.dimension


def test_connections_from_one_host_are_one_caller_by_default(
    settings: Settings, engine: FaceEngine, photos: dict[str, Path], large_photo: bytes, large_chip: bytes
) -> None:
    """A bulk client cannot widen its share by opening more connections."""
    with admitting(settings, engine, max_in_flight=2, max_queue=2, max_per_caller=1) as address, \
            _connection(address) as first, _connection(address) as second:
        holder = _slow(pb_grpc.FaceVerifierStub(first), (large_photo, large_chip))
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.FaceVerifierStub(second).ExtractTemplate(_small(photos), timeout=30)
        holder.result()
    assert reason_of(refused.value) == "OVERLOADED"


def test_work_whose_deadline_passes_in_the_queue_is_dropped_before_it_starts(
    settings: Settings, engine: FaceEngine, photos: dict[str, Path], large_photo: bytes, large_chip: bytes
) -> None:
    labels = {"method": "ExtractTemplate", "stage": "queue"}
    expired = _sample("verifier_deadline_expired_total", labels)
    with admitting(settings, engine, max_in_flight=1, max_queue=1, caller_key="connection") as address, \
            _connection(address) as first, _connection(address) as second:
        holder = _slow(pb_grpc.FaceVerifierStub(first), (large_photo, large_chip))
        with pytest.raises(grpc.RpcError) as late:
            pb_grpc.FaceVerifierStub(second).ExtractTemplate(_small(photos), timeout=0.05)
        _until(lambda: _sample("verifier_deadline_expired_total", labels) > expired, "the queued call dropped")
        assert not holder.done()
        holder.result()
    assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert _sample("verifier_deadline_expired_total", labels) == expired + 1


def test_a_caller_holds_no_more_than_its_share_while_another_is_active() -> None:
    """Three slots, a gate and a bulk caller each running one call: the bulk
    caller's next call waits although a slot is free; when the gate's call ends
    the slot is kept for the gate's next call (sent a moment later) within the
    idle grace, and goes to the bulk caller once the gate stays away."""
    grace = 0.3
    admission = Admission(AdmissionSettings(max_in_flight=3, max_queue=4, max_per_caller=4, idle_grace_seconds=grace))
    gate, bulk = admission.slot("gate", None), admission.slot("bulk", None)
    gate.__enter__()
    bulk.__enter__()
    started = threading.Event()

    def more_bulk() -> None:
        with admission.slot("bulk", None):
            started.set()

    extra = threading.Thread(target=more_bulk)
    extra.start()
    _until(lambda: _sample("verifier_admission_queued") >= 1, "the extra bulk call waiting")
    assert not started.wait(grace / 2), "the bulk caller took a second slot while the gate was active"
    gate.__exit__(None, None, None)
    with admission.slot("gate", None):  # the gate's next call, a moment later: taken at once
        assert not started.is_set()
    ended = time.monotonic()
    assert started.wait(WAIT_S), "the bulk call never ran once the gate stayed away"
    assert time.monotonic() - ended >= grace * 0.9
    extra.join(WAIT_S)
    bulk.__exit__(None, None, None)


def test_a_freed_slot_is_held_for_the_less_served_caller_between_its_calls() -> None:
    """Two slots. The bulk caller has used far more CPU than the gate. When both
    running calls end, the bulk caller's waiting call does not take the freed
    slots while the gate, between calls, is within its grace; it runs once the
    grace has passed."""
    grace = 0.3
    admission = Admission(AdmissionSettings(max_in_flight=2, max_queue=4, max_per_caller=4, idle_grace_seconds=grace))
    gate = admission.slot("gate", None)
    gate.__enter__()

    def costly_bulk_call() -> None:  # on its own thread: the CPU meter is per thread
        with admission.slot("bulk", None):
            _spin_cpu(0.2)

    first = threading.Thread(target=costly_bulk_call)
    first.start()
    first.join(WAIT_S)
    bulk = admission.slot("bulk", None)
    bulk.__enter__()
    started = threading.Event()

    def more_bulk() -> None:
        with admission.slot("bulk", None):
            started.set()

    extra = threading.Thread(target=more_bulk)
    extra.start()
    _until(lambda: _sample("verifier_admission_queued") >= 1, "the extra bulk call waiting")
    gate.__exit__(None, None, None)
    bulk.__exit__(None, None, None)
    freed = time.monotonic()
    assert started.wait(WAIT_S), "the bulk call never ran"
    assert time.monotonic() - freed >= grace * 0.9, "the slot was not held for the less-served gate"
    extra.join(WAIT_S)


def test_refused_callers_are_told_to_wait_longer_as_refusals_pile_up() -> None:
    """The retry hint counts the callers refused lately, who will come back too:
    a burst of refusals spreads them out, within the configured bounds."""
    limits = AdmissionSettings(max_in_flight=1, max_queue=0, retry_jitter=0.0, retry_after_max_seconds=0.4)
    admission = Admission(limits)
    holder = admission.slot("holder", None)
    holder.__enter__()
    hints = []
    for i in range(40):
        with pytest.raises(VerifierError) as refused:
            with admission.slot(f"caller-{i}", None):
                pass
        assert refused.value.reason is Reason.OVERLOADED
        hints.append(int(refused.value.details["retry_after_ms"]) / 1000.0)
    holder.__exit__(None, None, None)
    assert hints == sorted(hints)
    assert hints[0] >= limits.retry_after_min_seconds
    assert hints[-1] == limits.retry_after_max_seconds > hints[0]


def test_a_caller_of_outsized_calls_yields_to_one_that_used_as_much_cpu_in_ordinary_calls() -> None:
    """Both callers used about the same CPU, the heavy one in one call four
    times ``heavy_call_seconds``, the light one in many calls well under it: the
    heavy call is charged four times its CPU, so when one slot frees the light
    caller's call runs first although the heavy caller asked first."""
    limits = AdmissionSettings(
        max_in_flight=2, max_queue=4, max_per_caller=4, idle_grace_seconds=30.0, hold_margin_seconds=100.0,
        heavy_call_seconds=0.05,
    )
    admission = Admission(limits)
    heavy, light = admission.slot("heavy", None), admission.slot("light", None)
    heavy.__enter__()  # both callers start level, before either has used any CPU
    light.__enter__()
    heavy.__exit__(None, None, None)
    light.__exit__(None, None, None)

    order: list[str] = []

    def call(key: str, cpu_s: float) -> None:  # on its own thread: the CPU meter is per thread
        with admission.slot(key, None):
            order.append(key)
            _spin_cpu(cpu_s)

    for key, cpu_s, calls in (("heavy", 0.2, 1), ("light", 0.02, 12)):
        for _ in range(calls):
            worker = threading.Thread(target=call, args=(key, cpu_s))
            worker.start()
            worker.join(WAIT_S)
    order.clear()
    blockers = [admission.slot("blocker-1", None), admission.slot("blocker-2", None)]
    for blocker in blockers:
        blocker.__enter__()
    waiters = []
    for key in ("heavy", "light"):
        waiters.append(threading.Thread(target=call, args=(key, 0.0)))
        waiters[-1].start()
        _until(lambda n=len(waiters): _sample("verifier_admission_queued") >= n, f"the {key} call waiting")
    blockers[0].__exit__(None, None, None)  # one slot frees: the calls take it one after the other
    for waiter in waiters:
        waiter.join(WAIT_S)
    blockers[1].__exit__(None, None, None)
    assert order == ["light", "heavy"]


def test_a_call_that_cannot_finish_within_its_deadline_is_refused_instead_of_queued() -> None:
    """Once calls have been seen to take a while, a call whose deadline leaves
    less than the wait for the calls ahead plus its own is refused at once
    (bound "deadline"), while one with time enough waits for its turn."""
    admission = Admission(AdmissionSettings(max_in_flight=1, max_queue=4, max_per_caller=4, caller_key="connection"))
    for _ in range(20):  # calls of 0.1 s wall bring the measured time per call near it
        with admission.slot("gate", None):
            time.sleep(0.1)
    holder = admission.slot("gate", None)
    holder.__enter__()
    with pytest.raises(VerifierError) as refused:  # had it queued, its deadline would have passed there
        with admission.slot("hurried", Deadline(time.monotonic() + 0.05)):
            pass
    assert refused.value.reason is Reason.OVERLOADED and refused.value.details["bound"] == "deadline"
    assert int(refused.value.details["retry_after_ms"]) > 0
    ran = threading.Event()

    def patient() -> None:
        with admission.slot("patient", Deadline(time.monotonic() + WAIT_S)):
            ran.set()

    waiter = threading.Thread(target=patient)
    waiter.start()
    _until(lambda: _sample("verifier_admission_queued") >= 1, "the patient call waiting")
    holder.__exit__(None, None, None)
    waiter.join(WAIT_S)
    assert ran.is_set()


def _spin_cpu(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
