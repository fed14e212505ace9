"""A fuzz corpus of corrupted real images against a real server process.

2,000 deterministic (seeded) mutants of real JPEG, JPEG 2000, PNG and WEBP files
(truncations, bit flips, overwritten runs, inserted and deleted bytes, and
header lies: huge, doubled or zero sizes in the JPEG SOF, PNG IHDR, JPEG 2000
SIZ and WEBP VP8/VP8L/VP8X headers) go over a real gRPC socket to a server in
its own process, so that a crash in a codec would kill it (and fail the test)
and its resident memory can be measured alone. Every mutant must get an answer
or a clean INVALID_ARGUMENT / FAILED_PRECONDITION with a reason, within 250 ms,
and the server's peak resident memory may grow by at most 200 MB.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from PIL import Image

from verifier.client import reason_of
from verifier.v1 import verifier_pb2 as pb
from verifier.templates import TemplateSpec
from verifier.v1 import verifier_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
PER_FORMAT = 500
ACCEPTABLE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
MAX_SERVER_MS = 250.0
MAX_GROWTH_MB = 200.0
HUGE = ((65_000, 65_000), (20_000, 20_000), (4096, 3072), (0, 0), (1, 1))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server_process() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`verifier serve` in its own process on a free loopback port (the 1:1 service only)."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), VERIFIER_SERVER__HOST="127.0.0.1", VERIFIER_WATCHLIST__ENABLED="false")
    process = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "serve", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as chan:
            grpc.channel_ready_future(chan).result(timeout=120)
        yield process, address
    finally:
        process.terminate()
        process.wait(timeout=30)


def _peak_rss_mb(pid: int) -> float:
    """The process's resident-memory high-water mark (VmHWM), native allocations included."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


# --- header lies: rewrite the declared size in each format's own header ------------------


def _jpeg_size(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    for sof in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        at = data.find(sof)
        if at > 0:
            out[at + 5 : at + 9] = struct.pack(">HH", min(height, 0xFFFF), min(width, 0xFFFF))
            break
    return bytes(out)


def _png_size(data: bytes, width: int, height: int, fix_crc: bool) -> bytes:
    out = bytearray(data)
    out[16:24] = struct.pack(">II", width, height)
    if fix_crc:
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def _jp2_size(data: bytes, width: int, height: int, in_box: bool) -> bytes:
    out = bytearray(data)
    siz = data.find(b"\xff\x51")
    out[siz + 6 : siz + 14] = struct.pack(">II", width, height)
    ihdr = data.find(b"ihdr")
    if in_box and ihdr > 0:
        out[ihdr + 4 : ihdr + 12] = struct.pack(">II", height, width)
    return bytes(out)


def _webp_size(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    kind = data[12:16]
    w, h = max(width, 1), max(height, 1)
    if kind == b"VP8X":
        out[24:30] = struct.pack("<I", w - 1)[:3] + struct.pack("<I", h - 1)[:3]
    elif kind == b"VP8 ":
        out[26:30] = struct.pack("<HH", min(w, 0x3FFF), min(h, 0x3FFF))
    elif kind == b"VP8L":
        bits = (min(w, 0x4000) - 1) | ((min(h, 0x4000) - 1) << 14) | (data[24] >> 4 << 28)
        out[21:25] = struct.pack("<I", bits)
    return bytes(out)


def _lie(fmt: str, data: bytes, rng: np.random.Generator) -> bytes:
    width, height = HUGE[int(rng.integers(0, len(HUGE)))] if rng.random() < 0.6 else (
        int(rng.integers(1, 5000)), int(rng.integers(1, 5000)))
    if fmt == "jpg":
        return _jpeg_size(data, width, height)
    if fmt == "png":
        return _png_size(data, width, height, fix_crc=bool(rng.random() < 0.8))
    if fmt == "jp2":
        return _jp2_size(data, width, height, in_box=bool(rng.random() < 0.7))
    return _webp_size(data, width, height)


# --- generic mutations --------------------------------------------------------------------


def _flip(raw: bytearray, rng: np.random.Generator) -> bytearray:
    for pos in rng.integers(0, len(raw), size=int(rng.integers(1, 40))):
        raw[pos] ^= 1 << int(rng.integers(0, 8))
    return raw


def _flip_header(raw: bytearray, rng: np.random.Generator) -> bytearray:
    for pos in rng.integers(0, min(len(raw), 300), size=int(rng.integers(1, 6))):
        raw[pos] ^= 1 << int(rng.integers(0, 8))
    return raw


def _truncate(raw: bytearray, rng: np.random.Generator) -> bytearray:
    return raw[: int(rng.integers(1, len(raw)))]


def _overwrite(raw: bytearray, rng: np.random.Generator) -> bytearray:
    start = int(rng.integers(0, len(raw) - 64))
    raw[start : start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    return raw


def _splice(raw: bytearray, rng: np.random.Generator) -> bytearray:
    at, count = int(rng.integers(0, len(raw))), int(rng.integers(1, 200))
    if rng.random() < 0.5:
        return raw[:at] + bytearray(rng.integers(0, 256, count, dtype=np.uint8).tobytes()) + raw[at:]
    return raw[:at] + raw[at + count :]


MUTATIONS: tuple[Callable[[bytearray, np.random.Generator], bytearray], ...] = (
    _flip, _flip_header, _truncate, _overwrite, _splice,
)


def corpus(originals: dict[str, bytes], per_format: int, seed: int = 9) -> list[tuple[str, str, bytes]]:
    """(format, mutation, bytes) for ``per_format`` mutants of each original; a
    sixth of them are header lies, the rest spread over the generic mutations."""
    out = []
    for fmt, data in originals.items():
        rng = np.random.default_rng([seed, len(fmt), sum(fmt.encode())])
        for i in range(per_format):
            if i % 6 == 5:
                out.append((fmt, "header-lie", _lie(fmt, data, rng)))
            else:
                mutate = MUTATIONS[i % 6]
                out.append((fmt, mutate.__name__.strip("_"), bytes(mutate(bytearray(data), rng))))
    return out


def _originals(photos: dict[str, Path]) -> dict[str, bytes]:
    """Real photos as a kiosk might send them, at a capture-like size."""
    photo = cv2.resize(cv2.imread(str(photos["obama2.jpg"])), (313, 600))
    encoded = {ext.lstrip("."): cv2.imencode(ext, photo)[1].tobytes() for ext in (".jpg", ".png", ".jp2")}
    encoded["webp"] = cv2.imencode(".webp", photo, [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes()
    return encoded


def _request(fmt: str, data: bytes) -> pb.ExtractTemplateRequest:
    """JPEG 2000 arrives as a chip photo (a document); the other formats as live captures."""
    kind = pb.IMAGE_KIND_DOCUMENT if fmt == "jp2" else pb.IMAGE_KIND_LIVE
    return pb.ExtractTemplateRequest(image=pb.Image(data=data), kind=kind)


def _call(stub: pb_grpc.FaceVerifierStub, fmt: str, data: bytes) -> tuple[grpc.StatusCode, str, float]:
    start = time.perf_counter()
    try:
        stub.ExtractTemplate(_request(fmt, data), timeout=30)
        code, reason = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, reason = error.code(), reason_of(error) or ""
    return code, reason, (time.perf_counter() - start) * 1000.0


def test_corpus_is_deterministic_and_covers_every_format(photos: dict[str, Path]) -> None:
    originals = _originals(photos)
    first, again = corpus(originals, 24), corpus(originals, 24)
    assert first == again
    assert {fmt for fmt, _, _ in first} == {"jpg", "png", "jp2", "webp"}
    assert {kind for _, kind, _ in first} == {"flip", "flip_header", "truncate", "overwrite", "splice", "header-lie"}
    assert all(data != originals[fmt] for fmt, _, data in first)


def test_fuzz_corpus_gets_clean_answers_within_time_and_memory(
    server_process: tuple[subprocess.Popen[bytes], str], photos: dict[str, Path], template_spec: TemplateSpec
) -> None:
    process, address = server_process
    originals = _originals(photos)
    mutants = corpus(originals, PER_FORMAT)
    assert len(mutants) >= 2000
    with grpc.insecure_channel(address) as chan:
        stub = pb_grpc.FaceVerifierStub(chan)
        for fmt, data in originals.items():  # warm every codec and model before the baseline
            code, _, _ = _call(stub, fmt, data)
            assert code is grpc.StatusCode.OK
        baseline = _peak_rss_mb(process.pid)
        codes: dict[str, int] = {}
        slow: list[tuple[str, str, float]] = []
        for fmt, kind, data in mutants:
            code, reason, ms = _call(stub, fmt, data)
            assert code in ACCEPTABLE, f"{fmt} {kind}: {code} {reason}"
            assert code is grpc.StatusCode.OK or reason, f"{fmt} {kind}: {code} without a machine-readable reason"
            if ms > MAX_SERVER_MS:  # the wall time includes this machine's other load: take the best of three
                ms = min([ms] + [_call(stub, fmt, data)[2] for _ in range(2)])
                if ms > MAX_SERVER_MS:
                    slow.append((fmt, kind, ms))
            codes[reason or "OK"] = codes.get(reason or "OK", 0) + 1
        assert process.poll() is None, "the server died"
        growth = _peak_rss_mb(process.pid) - baseline
        assert not slow, f"mutants over {MAX_SERVER_MS} ms: {slow[:5]}"
        assert growth <= MAX_GROWTH_MB, f"peak resident memory grew {growth:.0f} MB"
        for fmt, data in originals.items():
            healthy = stub.ExtractTemplate(_request(fmt, data), timeout=30)
            assert healthy.template.dimension == template_spec.dimension, fmt
    assert codes.get("OK", 0) > 0 and codes.get("IMAGE_UNDECODABLE", 0) > 0 and codes.get("IMAGE_TOO_LARGE", 0) > 0
