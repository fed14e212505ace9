"""CPU metering of one request across the threads that work for it, with the real engine."""

from __future__ import annotations

import time
from pathlib import Path

from verifier import costs
from verifier.config import Settings
from verifier.matching import Matcher, Threshold
from verifier.pipeline import FaceEngine
from verifier.service import VerificationService


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_meter_counts_this_thread_and_nothing_outside_the_block() -> None:
    _spin(0.05)
    with costs.metering() as meter:
        _spin(0.05)
    assert 0.04 <= meter.seconds < 0.09


def test_a_verify_is_charged_the_cpu_of_both_image_workers(
    settings: Settings, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    """Probe and chip are analysed on two worker threads: the request's own
    thread only waits, yet the meter holds both analyses' CPU."""
    service = VerificationService(engine, Matcher(engine.template_spec, Threshold(0.5, 1e-3, "test")), 2)
    probe, chip = photos["obama.jpg"].read_bytes(), photos["obama2.jpg"].read_bytes()
    service.verify(probe, chip)  # warm
    with costs.metering() as meter:
        start = time.thread_time()
        outcome = service.verify(probe, chip)
        own = time.thread_time() - start
    analysed_ms = sum(ms for stage, ms in outcome.timings_ms.items() if stage.split(".")[0] in ("probe", "reference"))
    assert own < 0.5 * meter.seconds
    assert meter.seconds * 1000.0 > 0.5 * analysed_ms
