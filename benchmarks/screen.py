"""Screen against Verify + Identify called separately, and ScreenStream's time to decision.

    .venv/bin/python -m benchmarks.screen [--gallery 100000] [--requests 100] [--seconds 20] [--streams 20]

A real server in this process on loopback, with one watch-list of
``--gallery`` subjects (seeded random unit templates of the model: the search
cost depends on the size, not on what the vectors show; the store is built
once and kept under benchmarks/results/ for later runs). The traveller sends
a 640x480 frame cut from one photo, the chip an ICAO-like portrait cut from
another photo of the same person.

1. One client, calls one after another: Screen(frame, chip) against
   Verify(frame, chip) followed by Identify(frame), p50/p99 as the client saw them.
2. Four clients for ``--seconds`` each: transactions per second of Screen,
   and of Verify + Identify pairs; CPU seconds of this process (server and
   clients together) per transaction.
3. ScreenStream: generated walk-through sequences (10 frames at 10 per second,
   the face growing from too small to large, alternating two real photos so
   that the face changes non-rigidly); time from sending the first frame that
   passes the quality bounds to receiving the decision, and the decisions.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.reporting import RESULTS_ROOT, latency_summary, provenance, run_dir, write_json
from benchmarks.samples import capture_jpeg, chip_jpeg
from verifier.app import build_service, start_server
from verifier.config import Settings, get_settings
from verifier.face.quality import QualityAssessor
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest
from verifier.pipeline import FaceEngine
from verifier.templates import Template
from verifier.v1 import gate_pb2 as gpb
from verifier.v1 import gate_pb2_grpc as gpb_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.store import SubjectEntry, WatchlistStore

SEED = 20261
WATCHLIST = "bench"
FRAME_INTERVAL_S = 0.1


def _store(settings: Settings, engine: FaceEngine, gallery: int) -> Path:
    """A watch-list store of ``gallery`` random subjects, built once per size and model."""
    path = RESULTS_ROOT / "screen-stores" / f"{engine.model_id}-{gallery}.sqlite3"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".building")
    staged.unlink(missing_ok=True)
    store = WatchlistStore.create(staged, settings.watchlist.busy_timeout_seconds)
    store.create_watchlist(WATCHLIST, "benchmark gallery")
    rng = np.random.default_rng(SEED)
    vectors = rng.standard_normal((gallery, engine.embedder.dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, vector in enumerate(vectors):
        store.add_subject(SubjectEntry(WATCHLIST, f"S-{i:07d}", "benchmark", "benchmarks", "", None),
                          [Template(engine.model_id, vector)])
    store.close()
    staged.rename(path)
    return path


def _box(engine: FaceEngine, photo: bytes) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in engine.analyse(photo).face.box)
    return x1, y1, x2, y2


def walk_through(photos: list[np.ndarray], boxes: list[tuple[float, float, float, float]]) -> list[bytes]:
    """Ten 960x720 frames: the face, kept at the frame's centre, growing as the
    traveller approaches; the photos alternate, so the face changes non-rigidly."""
    frames = []
    for step, scale in enumerate([0.12, 0.16, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7]):
        photo, (x1, y1, x2, y2) = photos[step % len(photos)], boxes[step % len(boxes)]
        shift = np.float32([[scale, 0, 480 - scale * (x1 + x2) / 2], [0, scale, 330 - scale * (y1 + y2) / 2]])
        scene = cv2.warpAffine(photo, shift, (960, 720), flags=cv2.INTER_AREA, borderValue=(100, 100, 100))
        frames.append(cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return frames


def _first_usable(engine: FaceEngine, settings: Settings, frames: list[bytes]) -> int:
    assessor = QualityAssessor.from_settings(settings, engine.embedder.utility_members)
    for index, frame in enumerate(frames):
        try:
            if not assessor.assess(engine.analyse_all(frame).faces[0]).codes:
                return index
        except Exception:  # noqa: BLE001 - no face in a far frame
            continue
    raise SystemExit("no frame of the walk-through passes the quality bounds")


def _timed(call: Callable[[], object], samples: list[float]) -> None:
    start = time.perf_counter()
    call()
    samples.append((time.perf_counter() - start) * 1000.0)


def _clients(count: int, seconds: float, transaction: Callable[[], None]) -> tuple[int, float]:
    """(transactions, CPU seconds of this process) with ``count`` clients for ``seconds``."""
    done = [0] * count
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        while time.monotonic() < stop:
            transaction()
            done[k] += 1

    process = psutil.Process()
    before = sum(process.cpu_times()[:2])
    threads = [threading.Thread(target=client, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), sum(process.cpu_times()[:2]) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="calls per kind, one client")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration per kind, four clients")
    parser.add_argument("--streams", type=int, default=20, help="walk-through sequences")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = get_settings().model_copy(deep=True)
    settings.server.host, settings.server.port = "127.0.0.1", 0
    settings.admission.caller_key = "connection"
    engine = FaceEngine.from_settings(settings)
    photos = fetch_asset(load_manifest(settings.models.manifest).assets["face-recognition-photos"],
                         settings.models.cache_dir)
    raw = {name: photos[name].read_bytes() for name in ("obama.jpg", "obama2.jpg", "obama3.jpg")}
    frame = capture_jpeg(raw["obama3.jpg"], _box(engine, raw["obama3.jpg"]))
    chip, _ = chip_jpeg(raw["obama.jpg"], _box(engine, raw["obama.jpg"]))
    walkers = ("obama2.jpg", "obama3.jpg")
    sequence = walk_through([cv2.imread(str(photos[n])) for n in walkers],
                            [_box(engine, photos[n].read_bytes()) for n in walkers])
    usable = _first_usable(engine, settings, sequence)
    built = time.perf_counter()
    store = _store(settings, engine, args.gallery)
    report: dict[str, object] = {"provenance": provenance(), "gallery": args.gallery,
                                 "store_build_s": time.perf_counter() - built}
    with tempfile.TemporaryDirectory() as data_dir:
        settings.data_dir = Path(data_dir)
        (settings.data_dir / "watchlist").mkdir(mode=0o700)
        shutil.copy(store, settings.watchlist.store_file(settings.data_dir))
        running = start_server(settings, build_service(settings, engine))
        try:
            address = f"127.0.0.1:{running.port}"
            with grpc.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                ask = health_pb2.HealthCheckRequest(service="verifier.v1.Watchlist")
                while health.Check(ask, timeout=60).status != health_pb2.HealthCheckResponse.SERVING:
                    time.sleep(0.1)
                report |= _unary(channel, frame, chip, args)
                report["stream"] = _streams(channel, chip, sequence, usable, args.streams)
        finally:
            running.stop(grace=1.0)
    out = run_dir(args.out) / "screen.json"
    write_json(out, report)
    print(f"written: {out}")


def _unary(channel: grpc.Channel, frame: bytes, chip: bytes, args: argparse.Namespace) -> dict[str, object]:
    gate = gpb_grpc.GateStub(channel)
    verify = pb_grpc.FaceVerifierStub(channel).Verify
    identify = wl_grpc.WatchlistStub(channel).Identify
    image = pb.FaceSample(image=pb.Image(data=chip))

    def screen() -> None:
        answer = gate.Screen(gpb.ScreenRequest(frames=[pb.Image(data=frame)], reference=image, gate_id="bench",
                                               transaction_id=uuid.uuid4().hex), timeout=60)
        if answer.decision != gpb.ACCEPT:
            raise SystemExit(f"Screen answered {gpb.GateDecision.Name(answer.decision)} {list(answer.reasons)}")

    def separately() -> None:
        verify(pb.VerifyRequest(probe=pb.Image(data=frame), reference=image), timeout=60)
        identify(wl.IdentifyRequest(probe=pb.FaceSample(image=pb.Image(data=frame))), timeout=60)

    for warm in (screen, separately):
        warm()
    one: dict[str, list[float]] = {"screen": [], "verify+identify": []}
    for _ in range(args.requests):
        _timed(screen, one["screen"])
        _timed(separately, one["verify+identify"])
    results: dict[str, object] = {"one_client": {k: latency_summary(v) for k, v in one.items()}}
    four = {}
    for name, call in (("screen", screen), ("verify+identify", separately)):
        done, cpu = _clients(4, args.seconds, call)
        four[name] = {"transactions": done, "per_second": done / args.seconds, "cpu_s_per_transaction": cpu / done}
    results["four_clients"] = four
    for name in one:
        summary = results["one_client"][name]  # type: ignore[index]
        print(f"{name:16s} 1 client p50 {summary['p50']:7.1f} ms p99 {summary['p99']:7.1f} ms; 4 clients "
              f"{four[name]['per_second']:5.2f}/s, CPU {1000 * four[name]['cpu_s_per_transaction']:6.1f} ms each")
    return results


def stream_requests(chip: bytes, frames: list[bytes], sent: list[float],
                    gate_id: str) -> Iterator[gpb.ScreenStreamRequest]:
    """A walk-through as a kiosk sends it: the start, then the frames at 10 a
    second, each one's sending time appended to ``sent``."""
    yield gpb.ScreenStreamRequest(start=gpb.ScreenStart(
        reference=pb.FaceSample(image=pb.Image(data=chip)), gate_id=gate_id, transaction_id=uuid.uuid4().hex))
    for frame in frames:
        sent.append(time.perf_counter())
        yield gpb.ScreenStreamRequest(frame=pb.Image(data=frame))
        time.sleep(FRAME_INTERVAL_S)


def _streams(channel: grpc.Channel, chip: bytes, frames: list[bytes], usable: int, count: int) -> dict[str, object]:
    gate = gpb_grpc.GateStub(channel)
    to_decision, decisions, decided_at = [], [], []
    process = psutil.Process()
    cpu_before = sum(process.cpu_times()[:2])
    for _ in range(count):
        sent: list[float] = []
        for answer in gate.ScreenStream(stream_requests(chip, frames, sent, "bench"), timeout=60):
            if answer.WhichOneof("item") == "decision":
                received = time.perf_counter()
                decisions.append(gpb.GateDecision.Name(answer.decision.decision))
                decided_at.append(answer.decision.frame_index)
                to_decision.append((received - sent[usable]) * 1000.0)
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    summary = latency_summary(to_decision)
    print(f"ScreenStream: first usable frame {usable} of {len(frames)}; decided at frames "
          f"{sorted(set(decided_at))}; {dict((d, decisions.count(d)) for d in set(decisions))}; "
          f"first usable frame to decision p50 {summary['p50']:.0f} ms p99 {summary['p99']:.0f} ms; "
          f"CPU {1000 * cpu / count:.0f} ms per stream")
    return {"first_usable_frame": usable, "frames": len(frames), "decided_at": decided_at, "decisions": decisions,
            "usable_to_decision_ms": summary, "cpu_s_per_stream": cpu / count}


if __name__ == "__main__":
    main()
