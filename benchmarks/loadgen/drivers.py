"""How the load is applied: closed loop (workers calling back to back, each on
a channel of its own) and open loop (Poisson arrivals, latency from the
scheduled arrival), with what each level records: latencies, failures, the
server's own stage times, and the CPU and memory of server and client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import psutil

from benchmarks.loadgen.operations import Operation
from benchmarks.loadgen.server import channel_to
from benchmarks.reporting import latency_summary
from verifier.client import retry_after

# A client refused OVERLOADED without a retry delay waits this long before its next call.
REFUSAL_BACKOFF_S = 0.5
WARMUP_CALLS = 5
OPEN_LOOP_CHANNELS = 4
# Calls outstanding in open loop beyond which an arrival is dropped and counted
# as an error: the server has fallen behind for good, waiting longer shows nothing.
OPEN_LOOP_MAX_IN_FLIGHT = 256
RESOURCE_SAMPLE_S = 0.25
CLIENT_BACKLOG = "CLIENT_BACKLOG"


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
    run_clients(threads, ready, usage)
    return recorder, time.perf_counter() - clock["start"]


def run_clients(threads: list[threading.Thread], ready: threading.Barrier, usage: Usage) -> None:
    """Start the clients, release them together at ``ready`` (whose action
    starts the clock), and measure the server's CPU until the last one ends."""
    for thread in threads:
        thread.start()
    ready.wait()
    with usage.measuring():
        for thread in threads:
            thread.join()


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


def level_result(
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
