"""Corrupted real images never crash the server or come back as an internal error."""

from __future__ import annotations

from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from verifier.server.errors import reason_of
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.templates import TemplateSpec

MUTATIONS = 60
ACCEPTABLE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}


def _mutants(data: bytes, rng: np.random.Generator) -> list[bytes]:
    out = []
    for i in range(MUTATIONS):
        raw = bytearray(data)
        kind = i % 3
        if kind == 0:
            for pos in rng.integers(0, len(raw), size=int(rng.integers(1, 40))):
                raw[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            raw = raw[: int(rng.integers(1, len(raw)))]
        else:
            start = int(rng.integers(0, len(raw) - 64))
            raw[start : start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        out.append(bytes(raw))
    return out


@pytest.mark.parametrize("ext", [".jpg", ".png", ".jp2"])
def test_corrupted_images_get_a_clear_status(
    channel: grpc.Channel, photos: dict[str, Path], ext: str, template_spec: TemplateSpec
) -> None:
    stub = pb_grpc.FaceVerifierStub(channel)
    photo = cv2.resize(cv2.imread(str(photos["obama2.jpg"])), (313, 600))
    original = cv2.imencode(ext, photo)[1].tobytes()
    for data in _mutants(original, np.random.default_rng(len(ext))):
        try:
            stub.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=data)), timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert reason_of(error), f"no machine-readable reason for {code}"
        assert code in ACCEPTABLE
    healthy = stub.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=original)), timeout=30)
    assert healthy.template.dimension == template_spec.dimension
