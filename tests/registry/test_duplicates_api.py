"""Register over a real socket answers the calibrated duplicate decision's reasons:
DUPLICATE_SUSPECTED (an officer decides) and, with the same document,
DUPLICATE_IDENTITY found by face and document; nothing is stored for either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.registry.test_registry_api import _refusal, _register, running, stub  # noqa: F401 - this module's own server
from verifier.app import RunningServer
from verifier.registry.duplicates import DuplicatePolicy
from verifier.registry.service import RegistryService
from verifier.v1 import registry_pb2 as rg
from verifier.v1 import registry_pb2_grpc as rg_grpc

# An agency that never refuses on the face alone: every face duplicate goes to
# an officer (the certain threshold lies above any cosine score at these sizes).
NEVER_CERTAIN = 1e-20


@pytest.fixture
def never_certain(running: RunningServer) -> Iterator[RegistryService]:  # noqa: F811
    """The running registry deciding with NEVER_CERTAIN, its own policy put back after."""
    registry = running.registry
    assert registry is not None
    served = registry.duplicate_policy
    registry.duplicate_policy = DuplicatePolicy(registry.config.model_copy(
        update={"duplicate_certain_rate": NEVER_CERTAIN}))
    try:
        yield registry
    finally:
        registry.duplicate_policy = served


def test_register_refers_a_suspected_duplicate_and_refuses_one_with_the_same_document(
    never_certain: RegistryService, stub: rg_grpc.RegistryStub, photos: dict[str, Path]  # noqa: F811
) -> None:
    assert never_certain.duplicate_policy.thresholds(4).certain > 1.0
    obama, obama2, obama3 = (photos[n].read_bytes() for n in ("obama.jpg", "obama2.jpg", "obama3.jpg"))
    _register(stub, "d-1", "P-1", obama, obama2)

    code, meta = _refusal(lambda: _register(stub, "d-2", "P-2", obama2, obama3))
    assert code is grpc.StatusCode.FAILED_PRECONDITION, meta
    assert meta["verifier-reason"] == "DUPLICATE_SUSPECTED" and meta["other_traveller_id"] == "d-1"
    assert meta["found_by"] == "face" and float(meta["score"]) >= float(meta["threshold"])
    assert int(meta["registry_size"]) == 2

    code, meta = _refusal(lambda: _register(stub, "d-3", "p 1", obama2, obama3))
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert meta["verifier-reason"] == "DUPLICATE_IDENTITY" and meta["other_traveller_id"] == "d-1"
    assert meta["found_by"] == "face+document"

    for refused in ("d-2", "d-3"):
        code, meta = _refusal(lambda t=refused: stub.GetTraveller(rg.GetTravellerRequest(traveller_id=t), timeout=10))
        assert code is grpc.StatusCode.NOT_FOUND and meta["verifier-reason"] == "SUBJECT_NOT_FOUND"
