"""Deadlines in the core: work is dropped before an expensive stage once the
caller's deadline has passed, in the request's thread and in the Verify image workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verifier import deadlines
from verifier.app import build_service
from verifier.config import Settings
from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.templates import Template
from verifier.watchlist.service import WatchlistService


def test_without_a_deadline_every_check_passes() -> None:
    deadlines.check("decode")
    with deadlines.deadline_after(None) as deadline:
        deadlines.check("decode")
    assert deadline is None and deadlines.current() is None


def test_an_expired_deadline_drops_the_image_before_decoding(engine: FaceEngine, photos: dict[str, Path]) -> None:
    with deadlines.deadline_after(0.0) as deadline, pytest.raises(VerifierError) as caught:
        engine.analyse(photos["obama.jpg"].read_bytes())
    assert caught.value.reason is Reason.DEADLINE_EXCEEDED and caught.value.details["stage"] == "decode"
    assert deadline is not None and deadline.expired_stage == "decode"
    assert deadlines.current() is None


def test_a_deadline_passing_during_decode_stops_before_detection(engine: FaceEngine, large_photo: bytes) -> None:
    """Decoding the costliest live frame (a 4096x3072 WEBP) takes well over 5 ms: a 5 ms deadline
    passes the decode check and fails the next one."""
    with deadlines.deadline_after(0.005) as deadline, pytest.raises(VerifierError) as caught:
        engine.analyse(large_photo)
    assert caught.value.details["stage"] == "detect"
    assert deadline is not None and deadline.expired_stage == "detect"


def test_the_deadline_reaches_the_verify_image_workers(
    settings: Settings, engine: FaceEngine, photos: dict[str, Path]
) -> None:
    local = settings.model_copy(deep=True)
    local.pipeline.image_workers = 2
    service = build_service(local, engine)
    probe, reference = (photos[name].read_bytes() for name in ("obama.jpg", "obama2.jpg"))
    assert service.verify(probe, reference).decision.match
    with deadlines.deadline_after(0.0) as deadline, pytest.raises(VerifierError) as caught:
        service.verify(probe, reference)
    assert caught.value.reason is Reason.DEADLINE_EXCEEDED
    assert deadline is not None and deadline.expired_stage == "decode"


def test_identification_is_dropped_before_the_search(
    settings: Settings, engine: FaceEngine, tmp_path: Path
) -> None:
    from tests.watchlist.samples import local_settings

    service = WatchlistService.open(local_settings(settings, tmp_path), engine)
    service.load()
    try:
        probe = Template(engine.model_id, np.ones(engine.embedder.dimension, dtype=np.float32) / 8)
        assert service.identify(probe).candidates == []
        with deadlines.deadline_after(0.0) as deadline, pytest.raises(VerifierError) as caught:
            service.identify(probe)
    finally:
        service.close()
    assert caught.value.details["stage"] == "search"
    assert deadline is not None and deadline.expired_stage == "search"
