"""Load generator: drives a real verifier server over loopback with gate-like images.

    .venv/bin/python -m benchmarks.loadgen [--duration 10] [--concurrency 1 2 4 8 16]
                                           [--rates 20 40] [--ops verify-images ...]
                                           [--target HOST:PORT] [--out DIR]

Without ``--target`` it starts ``verifier serve`` on a free loopback port as a
separate process (so client and server do not share an interpreter), waits for
the health service, and stops it on exit. Each operation runs closed loop
(N workers, each with its own channel and connection, each sending its next
call when the last one returns, or after waiting as long as an OVERLOADED
refusal asks) at every concurrency level, then open loop at
each fixed arrival rate (Poisson arrivals; latency counted from the scheduled
arrival, so a slow server cannot hide its queue). Every level is bounded by
``--duration`` and ``--max-requests``. Results go to a JSON file and plots in
the results folder; a short table is printed last.

Requests are a 640x480 camera frame and a ~20 KB chip portrait cut around the
face of real photos (see ``benchmarks.samples``); all pairs are one person, so
a Verify that does not match is counted as unexpected. When the server has the
Watchlist service, Identify searches the frames against a ``loadgen`` watch-list
of the sdist people's chips plus ``--gallery`` LFW people (when
``../shared/data`` is present), enrolled through the API and removed after.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import matplotlib
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.reporting import latency_summary, provenance, run_dir, write_json
from benchmarks.samples import Box, GatePair, chip_jpeg, gate_pairs
from verifier.client import retry_after
from verifier.config import REPO_ROOT, get_settings
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest
from verifier.v1 import registry_pb2 as rg
from verifier.v1 import registry_pb2_grpc as rg_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.ticker import NullLocator  # noqa: E402

log = logging.getLogger("loadgen")

VERIFIER_SERVICE = pb.DESCRIPTOR.services_by_name["FaceVerifier"].full_name
WATCHLIST_SERVICE = wl.DESCRIPTOR.services_by_name["Watchlist"].full_name
REGISTRY_SERVICE = rg.DESCRIPTOR.services_by_name["Registry"].full_name
# The traveller the verify-traveller operation registers (and erases afterwards).
LOADGEN_TRAVELLER = "loadgen-traveller"
LOADGEN_WATCHLIST = "loadgen"
SUBJECT_PREFIX = "loadgen-"
LFW_IMAGES = REPO_ROOT.parent / "shared" / "data" / "lfw-dev" / "images"
# The `verifier` command of the environment this runs in.
SERVE_COMMAND = [str(Path(sys.executable).with_name("verifier")), "serve"]
# The sdist photos: three of one person (the pairs) and one of another.
PEOPLE = {"obama": ["obama.jpg", "obama2.jpg", "obama3.jpg"], "biden": ["biden.jpg"]}
SERVER_START_TIMEOUT_S = 120.0
# A client refused OVERLOADED without a retry delay waits this long before its next call.
REFUSAL_BACKOFF_S = 0.5
SERVER_STOP_GRACE_S = 10.0
WARMUP_CALLS = 5
OPEN_LOOP_CHANNELS = 4
# Calls outstanding in open loop beyond which an arrival is dropped and counted
# as an error: the server has fallen behind for good, waiting longer shows nothing.
OPEN_LOOP_MAX_IN_FLIGHT = 256
RESOURCE_SAMPLE_S = 0.25
CLIENT_BACKLOG = "CLIENT_BACKLOG"
# Cores other processes may use during a level before the table calls the run noisy.
NOISY_OTHERS_CORES = 0.2
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Target:
    """One figure the performance issue asks for: checks on one closed-loop level."""

    name: str
    operation: str
    concurrency: int
    checks: tuple[tuple[str, str, float], ...]  # (metric, "<=" or ">=", bound)


TARGETS = (
    Target("Verify two images, concurrency 1", "verify-images", 1, (("p50", "<=", 30.0), ("p99", "<=", 60.0))),
    Target("Verify against a template, concurrency 1", "verify-template", 1, (("p50", "<=", 18.0),)),
    Target(
        "Verify two images, concurrency 4", "verify-images", 4, (("throughput_rps", ">=", 55.0), ("p99", "<=", 150.0))
    ),
)


@dataclass(frozen=True)
class Operation:
    """One RPC to load, with the requests it cycles through and what a right answer looks like."""

    name: str
    method: str
    requests: Sequence[Any]
    response_type: Any
    expected: Callable[[Any], bool]

    def callable_on(self, channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
        return channel.unary_unary(
            self.method,
            request_serializer=type(self.requests[0]).SerializeToString,
            response_deserializer=self.response_type.FromString,
        )


@dataclass
class Recorder:
    """Latencies, failures and server-reported stage times of one level, from many threads."""

    operation: Operation
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    stage_ms: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def success(self, started: float, response: Any) -> None:
        elapsed = (time.perf_counter() - started) * 1000.0
        right = self.operation.expected(response)
        timings = [(t.stage, t.milliseconds) for t in getattr(response, "timings", ())]
        with self.lock:
            self.latencies_ms.append(elapsed)
            self.unexpected += not right
            for stage, ms in timings:
                self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + ms

    def failure(self, code: str) -> None:
        with self.lock:
            self.errors[code] = self.errors.get(code, 0) + 1


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class Usage:
    """CPU (cores busy, from CPU time consumed) and peak resident memory of the
    server and of this client while a level runs, and the cores other processes
    took meanwhile (a run beside other work measures that work too)."""

    def __init__(self, server: psutil.Process | None) -> None:
        self.processes = {"server": server, "client": psutil.Process()}
        self.peak_rss = {name: 0 for name in self.processes}
        self.stop = threading.Event()
        self.report: dict[str, dict[str, float]] = {}

    def _cpu(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self.processes.items() if p is not None}

    def _sample(self) -> None:
        while not self.stop.wait(RESOURCE_SAMPLE_S):
            for name, process in self.processes.items():
                if process is not None:
                    self.peak_rss[name] = max(self.peak_rss[name], process.memory_info().rss)

    @contextmanager
    def measuring(self) -> Iterator[None]:
        start_cpu, start_machine, start = self._cpu(), _machine_busy_s(), time.perf_counter()
        sampler = threading.Thread(target=self._sample, name="usage", daemon=True)
        sampler.start()
        try:
            yield
        finally:
            self.stop.set()
            sampler.join()
            wall = time.perf_counter() - start
            end_cpu, machine = self._cpu(), _machine_busy_s() - start_machine
            self.report = {
                name: {
                    "cpu_cores": (end_cpu[name] - start_cpu[name]) / wall,
                    "rss_mb_peak": max(self.peak_rss[name], process.memory_info().rss) / 2**20,
                }
                for name, process in self.processes.items()
                if process is not None
            }
            ours = sum(end_cpu.values()) - sum(start_cpu.values())
            self.report["others"] = {"cpu_cores": max(0.0, machine - ours) / wall}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Looked up here, not in the forked child, where loading a library could block on a lock.
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Runs in the server child before exec: SIGTERM it if this process dies, however it dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _health(channel: grpc.Channel, service: str) -> int | None:
    """The service's health status, or None when the server does not know the name."""
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def wait_serving(
    address: str, service: str, process: subprocess.Popen[bytes] | None,
    channels: Callable[[str], grpc.Channel] = grpc.insecure_channel,
) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    with channels(address) as channel:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode} before serving")
            try:
                if _health(channel, service) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{service} at {address} was not SERVING within {SERVER_START_TIMEOUT_S:.0f} s")


@contextmanager
def started_server(
    log_path: Path, extra_env: dict[str, str], channels: Callable[[str], grpc.Channel] = grpc.insecure_channel
) -> Iterator[tuple[str, psutil.Process]]:
    """``verifier serve`` on a free loopback port, serving until the block ends,
    with its data (the watch-list store) in a temporary folder unless told
    otherwise; ``channels`` opens a channel to it (a TLS one for a TLS server)."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="loadgen-data-") as data_dir, log_path.open("wb") as server_log:
        env = {**os.environ, "VERIFIER_DATA_DIR": data_dir, **extra_env, "VERIFIER_SERVER__HOST": "127.0.0.1"}
        stores = [("watchlist", "init")]
        if env.get("VERIFIER_REGISTRY__ENABLED", "").lower() == "true":
            stores.append(("registry", "init"))  # a development document key in the temporary folder
        for command in stores:
            subprocess.run([SERVE_COMMAND[0], *command], env=env, cwd=REPO_ROOT, check=True,
                           capture_output=True, timeout=SERVER_START_TIMEOUT_S)
        process = subprocess.Popen(
            [*SERVE_COMMAND, "--port", str(port)], env=env, stdout=server_log, stderr=subprocess.STDOUT,
            cwd=REPO_ROOT, preexec_fn=_die_with_parent,
        )
        try:
            address = f"127.0.0.1:{port}"
            wait_serving(address, VERIFIER_SERVICE, process, channels)
            yield address, psutil.Process(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(SERVER_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _listening_process(address: str) -> psutil.Process | None:
    """The local process listening on ``address``'s port, when this user may see it."""
    port = int(address.rsplit(":", 1)[1])
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except psutil.AccessDenied:
        pass
    return None


def channel_to(address: str) -> grpc.Channel:
    # A connection of its own per channel, as each gate has.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def sdist_photos() -> dict[str, bytes]:
    settings = get_settings()
    spec = load_manifest(settings.models.manifest).assets["face-recognition-photos"]
    return {name: path.read_bytes() for name, path in fetch_asset(spec, settings.models.cache_dir).items()}


@dataclass(frozen=True)
class Material:
    """What the requests are made of: gate pairs, their chips' templates, and
    chip photos of every person (for a watch-list gallery)."""

    pairs: list[GatePair]
    templates: list[pb.Template]
    chips: dict[str, list[bytes]]


def prepare(channel: grpc.Channel) -> Material:
    """Gate images from the sdist photos; the server itself locates the faces to
    cut around and makes the chip templates."""
    stub = pb_grpc.FaceVerifierStub(channel)

    def extract(image: bytes) -> pb.ExtractTemplateResponse:
        return stub.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=image)), timeout=30)

    photos = sdist_photos()
    boxes: dict[str, Box] = {}
    for names in PEOPLE.values():
        for name in names:
            box = extract(photos[name]).face.box
            boxes[name] = (box.x1, box.y1, box.x2, box.y2)
    pairs = gate_pairs(photos, boxes, PEOPLE)
    chips = {person: [chip_jpeg(photos[name], boxes[name])[0] for name in names] for person, names in PEOPLE.items()}
    return Material(pairs, [extract(pair.chip).template for pair in pairs], chips)


def verifier_operations(material: Material) -> list[Operation]:
    service = f"/{VERIFIER_SERVICE}/"
    pairs = material.pairs
    return [
        Operation(
            "verify-images", service + "Verify",
            [pb.VerifyRequest(probe=pb.Image(data=p.probe), reference=pb.FaceSample(image=pb.Image(data=p.chip)))
             for p in pairs],
            pb.VerifyResponse, lambda r: bool(r.match),
        ),
        Operation(
            "verify-template", service + "Verify",
            [pb.VerifyRequest(probe=pb.Image(data=p.probe), reference=pb.FaceSample(template=t))
             for p, t in zip(pairs, material.templates)],
            pb.VerifyResponse, lambda r: bool(r.match),
        ),
        Operation(
            "extract-template", service + "ExtractTemplate",
            [pb.ExtractTemplateRequest(image=pb.Image(data=p.chip)) for p in pairs],
            pb.ExtractTemplateResponse, lambda r: r.template.dimension > 0,
        ),
    ]


def identify_operation(material: Material) -> Operation:
    """Each gate frame searched against the load-test watch-list: its person must come first."""
    expected = {SUBJECT_PREFIX + pair.person for pair in material.pairs}
    return Operation(
        "identify", f"/{WATCHLIST_SERVICE}/Identify",
        [wl.IdentifyRequest(probe=pb.FaceSample(image=pb.Image(data=p.probe)), watchlists=[LOADGEN_WATCHLIST])
         for p in material.pairs],
        wl.IdentifyResponse, lambda r: len(r.candidates) > 0 and r.candidates[0].subject_id in expected,
    )


def _lfw_people(count: int) -> dict[str, list[bytes]]:
    """The first image of the first ``count`` LFW people (none of the sdist people), when present."""
    if count <= 0 or not LFW_IMAGES.is_dir():
        return {}
    folders = sorted(
        f for f in LFW_IMAGES.iterdir() if f.is_dir() and not any(p in f.name.lower() for p in PEOPLE)
    )[:count]
    return {f.name: [min(f.glob("*.jpg")).read_bytes()] for f in folders if any(f.glob("*.jpg"))}


def _remove(stub: wl_grpc.WatchlistStub, subject_id: str) -> None:
    try:
        stub.RemoveSubject(wl.RemoveSubjectRequest(watchlist=LOADGEN_WATCHLIST, subject_id=subject_id), timeout=30)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise


def traveller_operation(material: Material) -> Operation:
    """Each gate frame verified against the registered traveller's stored templates by id."""
    return Operation(
        "verify-traveller", f"/{REGISTRY_SERVICE}/VerifyTraveller",
        [rg.VerifyTravellerRequest(traveller_id=LOADGEN_TRAVELLER, live_capture=pb.Image(data=p.probe))
         for p in material.pairs],
        rg.VerifyTravellerResponse, lambda r: bool(r.match),
    )


@contextmanager
def registered_traveller(channel: grpc.Channel, material: Material) -> Iterator[str]:
    """The first pair's person registered (chip photo and live capture) through
    the API as ``LOADGEN_TRAVELLER``, erased afterwards."""
    stub = rg_grpc.RegistryStub(channel)
    pair = material.pairs[0]
    stub.Register(rg.RegisterRequest(
        traveller_id=LOADGEN_TRAVELLER, document_number="LOADGEN1", chip_photo=pb.Image(data=pair.chip),
        live_capture=pb.Image(data=pair.probe), consent=rg.Consent(gate_id="loadgen", text_version="loadgen"),
    ), timeout=30)
    try:
        yield LOADGEN_TRAVELLER
    finally:
        stub.EraseTraveller(rg.EraseTravellerRequest(traveller_id=LOADGEN_TRAVELLER), timeout=30)


@contextmanager
def enrolled_gallery(channel: grpc.Channel, material: Material, lfw_people: int) -> Iterator[dict[str, int]]:
    """The ``loadgen`` watch-list with every sdist person (their chip photos) and
    LFW people as distractors, enrolled through the API and removed afterwards."""
    stub = wl_grpc.WatchlistStub(channel)
    try:
        stub.CreateWatchlist(
            wl.CreateWatchlistRequest(name=LOADGEN_WATCHLIST, description="benchmarks.loadgen gallery"), timeout=30
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    enrolled: list[str] = []
    skipped = 0
    try:
        for name, images in {**material.chips, **_lfw_people(lfw_people)}.items():
            subject_id = SUBJECT_PREFIX + name
            _remove(stub, subject_id)  # left over from an interrupted run against the same server
            subject = wl.Subject(
                watchlist=LOADGEN_WATCHLIST, subject_id=subject_id, reason="load test", source_agency="benchmarks"
            )
            samples = [pb.FaceSample(image=pb.Image(data=image)) for image in images]
            try:
                stub.EnrollSubject(wl.EnrollSubjectRequest(subject=subject, samples=samples), timeout=30)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                skipped += 1
                continue
            enrolled.append(subject_id)
        searched = stub.Identify(
            wl.IdentifyRequest(probe=pb.FaceSample(template=material.templates[0]), watchlists=[LOADGEN_WATCHLIST]),
            timeout=30,
        )
        yield {"subjects": len(enrolled), "templates": searched.gallery_size, "skipped_without_face": skipped}
    finally:
        for subject_id in enrolled:
            _remove(stub, subject_id)


def wait_as_told(error: grpc.RpcError, end: float, fallback_s: float = REFUSAL_BACKOFF_S) -> None:
    """After an OVERLOADED refusal, wait as long as the server asked (its
    RetryInfo; ``fallback_s`` when it did not say), as a kiosk should, but never
    past ``end`` (perf_counter time), so a level's wall time stays its own."""
    if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return
    hinted = retry_after(error)
    time.sleep(max(0.0, min(fallback_s if hinted is None else hinted, end - time.perf_counter())))


def closed_loop(
    operation: Operation, address: str, concurrency: int, duration: float, max_requests: int, timeout: float,
    usage: Usage, channels: Callable[[str], grpc.Channel] = channel_to,
) -> tuple[Recorder, float]:
    """``concurrency`` workers, each calling back to back on its own channel
    (opened by ``channels``); returns the recorder and wall time."""
    recorder = Recorder(operation)
    budget = iter(range(max_requests))
    budget_lock = threading.Lock()
    clock: dict[str, float] = {}
    ready = threading.Barrier(concurrency + 1, action=lambda: clock.update(start=time.perf_counter()))

    def take() -> bool:
        with budget_lock:
            return next(budget, None) is not None

    def worker(index: int) -> None:
        with channels(address) as channel:
            call = operation.callable_on(channel)
            try:
                call(operation.requests[index % len(operation.requests)], timeout=timeout)
            except grpc.RpcError as error:
                recorder.failure(error.code().name)
            ready.wait()
            end = clock["start"] + duration
            i = index
            while time.perf_counter() < end and take():
                request = operation.requests[i % len(operation.requests)]
                i += 1
                started = time.perf_counter()
                try:
                    recorder.success(started, call(request, timeout=timeout))
                except grpc.RpcError as error:
                    recorder.failure(error.code().name)
                    wait_as_told(error, end)

    threads = [threading.Thread(target=worker, args=(i,), name=f"client-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    with usage.measuring():
        for thread in threads:
            thread.join()
    return recorder, time.perf_counter() - clock["start"]


def open_loop(
    operation: Operation, address: str, rate: float, duration: float, max_requests: int, timeout: float,
    usage: Usage, seed: int,
) -> tuple[Recorder, float]:
    """Poisson arrivals at ``rate`` per second over a few shared channels, each
    call's latency counted from its scheduled arrival."""
    recorder = Recorder(operation)
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=max(1, int(rate * duration * 2)))
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < duration][:max_requests]
    outstanding = 0
    settled = threading.Condition()
    channels = [channel_to(address) for _ in range(OPEN_LOOP_CHANNELS)]
    try:
        calls = [operation.callable_on(channel) for channel in channels]
        for call in calls:
            call(operation.requests[0], timeout=timeout)

        def done(scheduled: float, future: grpc.Future) -> None:
            nonlocal outstanding
            if future.exception() is None:
                recorder.success(scheduled, future.result())
            else:
                recorder.failure(future.code().name)
            with settled:
                outstanding -= 1
                settled.notify_all()

        with usage.measuring():
            start = time.perf_counter()
            for i, offset in enumerate(arrivals):
                scheduled = start + float(offset)
                pause = scheduled - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                with settled:
                    if outstanding >= OPEN_LOOP_MAX_IN_FLIGHT:
                        recorder.failure(CLIENT_BACKLOG)
                        continue
                    outstanding += 1
                future = calls[i % len(calls)].future(operation.requests[i % len(operation.requests)], timeout=timeout)
                future.add_done_callback(lambda f, s=scheduled: done(s, f))
            with settled:
                settled.wait_for(lambda: outstanding == 0, timeout=timeout + 1.0)
            wall = time.perf_counter() - start
    finally:
        for channel in channels:
            channel.close()
    return recorder, wall


def _level_result(
    recorder: Recorder, wall: float, usage: Usage, mode: str, concurrency: int | None, rate: float | None
) -> dict[str, Any]:
    ok = len(recorder.latencies_ms)
    return {
        "operation": recorder.operation.name,
        "mode": mode,
        "concurrency": concurrency,
        "offered_rate": rate,
        "wall_s": wall,
        "requests": ok + sum(recorder.errors.values()),
        "ok": ok,
        "errors": dict(recorder.errors),
        "error_count": sum(recorder.errors.values()),
        "unexpected": recorder.unexpected,
        "throughput_rps": ok / wall if wall > 0 else 0.0,
        "latency_ms": latency_summary(recorder.latencies_ms),
        "server_stage_ms_mean": {stage: total / ok for stage, total in recorder.stage_ms.items()} if ok else {},
        "usage": usage.report,
    }


def _describe(result: dict[str, Any]) -> str:
    load = f"c={result['concurrency']}" if result["mode"] == "closed" else f"{result['offered_rate']:g}/s"
    latency = result["latency_ms"]
    p50 = f"{latency['p50']:.1f}" if latency["p50"] is not None else "-"
    return (
        f"{result['operation']} {result['mode']} {load}: {result['ok']} ok, {result['error_count']} errors, "
        f"{result['throughput_rps']:.1f}/s, p50 {p50} ms"
    )


def evaluate_targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of the issue against the closed-loop level it names (absent when not run)."""
    verdicts = []
    for target in TARGETS:
        run = next(
            (r for r in runs if r["mode"] == "closed" and r["operation"] == target.operation
             and r["concurrency"] == target.concurrency),
            None,
        )
        if run is None:
            continue
        checks = []
        for metric, relation, bound in target.checks:
            value = run["throughput_rps"] if metric == "throughput_rps" else run["latency_ms"][metric]
            met = value is not None and (value <= bound if relation == "<=" else value >= bound)
            checks.append({"metric": metric, "relation": relation, "bound": bound, "value": value, "met": met})
        verdicts.append({"target": target.name, "met": all(c["met"] for c in checks), "checks": checks})
    return verdicts


def _plot(runs: list[dict[str, Any]], mode: str, path: Path) -> None:
    chosen = [r for r in runs if r["mode"] == mode]
    operations = list(dict.fromkeys(r["operation"] for r in chosen))
    if not operations:
        return
    x_key, x_label = ("concurrency", "concurrent clients") if mode == "closed" else ("offered_rate", "offered rate (1/s)")
    figure, axes = plt.subplots(1, len(operations), figsize=(4.5 * len(operations), 4.4), squeeze=False)
    for ax, name in zip(axes[0], operations):
        rows = sorted((r for r in chosen if r["operation"] == name), key=lambda r: r[x_key])
        xs = [r[x_key] for r in rows]
        for percentile in ("p50", "p90", "p99", "p99.9"):
            ax.plot(xs, [r["latency_ms"][percentile] for r in rows], marker="o", label=percentile)
        if mode == "closed":
            ax.set_xscale("log", base=2)
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_ylim(bottom=0)
        ax.set_xlabel(x_label)
        ax.set_ylabel("latency (ms)")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        throughput = ax.twinx()
        rates = [r["throughput_rps"] for r in rows]
        throughput.plot(xs, rates, color="grey", linestyle="--", marker="s", label="rps")
        throughput.set_ylabel("completed per second")
        throughput.set_ylim(0, 1.15 * max(rates) or 1.0)
    lines, labels = axes[0][0].get_legend_handles_labels()
    extra, extra_labels = throughput.get_legend_handles_labels()
    figure.legend(lines + extra, labels + extra_labels, loc="lower center", ncol=len(labels) + 1)
    figure.suptitle(f"verifier over gRPC, {mode} loop")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def table(runs: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> str:
    """The short printout: one line per level, then the targets."""
    header = (
        f"{'operation':17s} {'mode':6s} {'load':>6s} {'ok':>6s} {'err':>4s} {'rps':>7s} "
        f"{'p50':>7s} {'p90':>7s} {'p99':>7s} {'p99.9':>7s} {'srv cpu':>7s} {'srv MB':>7s}"
    )
    lines = [header, "-" * len(header)]
    for r in runs:
        load = f"{r['concurrency']}" if r["mode"] == "closed" else f"{r['offered_rate']:g}/s"
        lat = r["latency_ms"]
        cells = " ".join(f"{lat[p]:7.1f}" if lat[p] is not None else f"{'-':>7s}" for p in ("p50", "p90", "p99", "p99.9"))
        server = r["usage"].get("server")
        res = f"{server['cpu_cores']:7.2f} {server['rss_mb_peak']:7.0f}" if server else f"{'-':>7s} {'-':>7s}"
        lines.append(
            f"{r['operation']:17s} {r['mode']:6s} {load:>6s} {r['ok']:6d} {r['error_count'] + r['unexpected']:4d} "
            f"{r['throughput_rps']:7.1f} {cells} {res}"
        )
    lines.append("latency in ms; srv cpu = server cores busy; err counts failed calls and wrong decisions")
    others = max((r["usage"]["others"]["cpu_cores"] for r in runs), default=0.0)
    if others > NOISY_OTHERS_CORES:
        lines.append(f"NOISY: other processes kept up to {others:.2f} cores busy during a level; measure on a quiet machine")
    for verdict in verdicts:
        facts = ", ".join(f"{c['metric']} {c['value']:.1f} {c['relation']} {c['bound']:g}" for c in verdict["checks"])
        lines.append(f"[{'met' if verdict['met'] else 'MISSED'}] {verdict['target']}: {facts}")
    return "\n".join(lines)


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("VERIFIER_"):
            raise argparse.ArgumentTypeError(f"--server-env takes VERIFIER_<GROUP>__<NAME>=VALUE, not {pair!r}")
        env[key] = value
    return env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="HOST:PORT of a running server (default: start one on loopback)")
    parser.add_argument("--server-env", nargs="*", default=[], metavar="VERIFIER_X__Y=V",
                        help="settings for the server this tool starts")
    parser.add_argument("--ops", nargs="+", default=None,
                        help="verify-images, verify-template, extract-template, identify (default: all the server has)")
    parser.add_argument("--concurrency", nargs="*", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--rates", nargs="*", type=float, default=[20.0, 40.0], help="open-loop arrivals per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--max-requests", type=int, default=5000, help="calls per level at most")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")
    parser.add_argument("--seed", type=int, default=5, help="seed of the open-loop arrival times")
    parser.add_argument("--gallery", type=int, default=100,
                        help="LFW people enrolled as Identify distractors, when ../shared/data is present")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/<timestamp>)")
    return parser


def run(args: argparse.Namespace, address: str, server: psutil.Process | None, out: Path) -> dict[str, Any]:
    """Every requested operation at every level against the server at ``address``;
    Identify too when the server has the Watchlist service, and VerifyTraveller
    when it has the Registry (``--server-env VERIFIER_REGISTRY__ENABLED=true``)."""
    with grpc.insecure_channel(address) as control, ExitStack() as stack:
        material = prepare(control)
        operations = verifier_operations(material)
        gallery = None
        if (not args.ops or "identify" in args.ops) and _health(control, WATCHLIST_SERVICE) is not None:
            wait_serving(address, WATCHLIST_SERVICE, None)
            gallery = stack.enter_context(enrolled_gallery(control, material, args.gallery))
            operations.append(identify_operation(material))
        if (not args.ops or "verify-traveller" in args.ops) and _health(control, REGISTRY_SERVICE) is not None:
            wait_serving(address, REGISTRY_SERVICE, None)
            stack.enter_context(registered_traveller(control, material))
            operations.append(traveller_operation(material))
        runs = measure(args, address, server, operations)
    verdicts = evaluate_targets(runs)
    results = {
        "provenance": provenance(),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "server": {
            "address": address,
            "pid": server.pid if server else None,
            "started_here": args.target is None,
            "env": parse_env(args.server_env),
        },
        "samples": [
            {"person": p.person, "probe": p.probe_name, "probe_bytes": len(p.probe), "chip": p.chip_name,
             "chip_bytes": len(p.chip), "chip_jpeg_quality": p.chip_quality}
            for p in material.pairs
        ],
        "watchlist_gallery": gallery,
        "runs": runs,
        "targets": verdicts,
    }
    write_json(out / "loadgen.json", results)
    _plot(runs, "closed", out / "loadgen-closed.png")
    _plot(runs, "open", out / "loadgen-open.png")
    return results


def measure(
    args: argparse.Namespace, address: str, server: psutil.Process | None, operations: list[Operation]
) -> list[dict[str, Any]]:
    available = {op.name: op for op in operations}
    unknown = set(args.ops or ()) - set(available)
    if unknown:
        raise SystemExit(f"unknown or unavailable operations: {', '.join(sorted(unknown))} (have {', '.join(available)})")
    chosen = [available[name] for name in (args.ops or available)]
    runs: list[dict[str, Any]] = []
    for operation in chosen:
        with channel_to(address) as channel:
            call = operation.callable_on(channel)
            for i in range(WARMUP_CALLS):
                call(operation.requests[i % len(operation.requests)], timeout=args.timeout)
        for concurrency in args.concurrency:
            usage = Usage(server)
            recorder, wall = closed_loop(
                operation, address, concurrency, args.duration, args.max_requests, args.timeout, usage
            )
            runs.append(_level_result(recorder, wall, usage, "closed", concurrency, None))
            log.info(_describe(runs[-1]))
        for rate in args.rates:
            usage = Usage(server)
            recorder, wall = open_loop(
                operation, address, rate, args.duration, args.max_requests, args.timeout, usage, args.seed
            )
            runs.append(_level_result(recorder, wall, usage, "open", None, rate))
            log.info(_describe(runs[-1]))
    return runs


def _operating_point(server_log: Path) -> str:
    """The server's own line saying which runtime and precision its models run at."""
    said = [line for line in server_log.read_text(errors="replace").splitlines() if "models run on" in line]
    return said[-1].split(": ", 1)[-1] if said else "the server log does not say which runtime it ran"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = run_dir(args.out)
    if args.target:
        results = run(args, args.target, _listening_process(args.target), out)
    else:
        with started_server(out / "server.log", parse_env(args.server_env)) as (address, server):
            results = run(args, address, server, out)
        print(_operating_point(out / "server.log"))
    print(f"CPU: {results['provenance']['cpu']}; features: {' '.join(results['provenance']['cpu_features'])}")
    print(table(results["runs"], results["targets"]))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    # Unwind on SIGTERM too, so that the server this started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
