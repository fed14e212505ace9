"""Soak: mixed Verify, Identify, enrol and remove against one server for a long while.

    .venv/bin/python -m benchmarks.soak [--duration 600] [--window 60] [--clients 4] [--out DIR]

Starts ``verifier serve`` on loopback (admission on, its defaults), enrols the
load generator's gallery, then runs ``--clients`` closed-loop clients, each
cycling through Verify, Identify, Verify, Identify, EnrollSubject of a new
subject and RemoveSubject of it, so the watch-list neither grows nor shrinks.
Per window it records the server's resident memory at the window's end and the
p50/p99 of every call in it. The run is judged flat when the last window's RSS
is within ``--rss-tolerance`` of the second window's (the first holds the
warm-up) and its p99 within ``--p99-tolerance`` of the second's.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from benchmarks.loadgen.operations import (
    LOADGEN_WATCHLIST,
    enrolled_gallery,
    identify_operation,
    prepare,
    verifier_operations,
)
from benchmarks.loadgen.server import WATCHLIST_SERVICE, channel_to, started_server, wait_serving
from benchmarks.reporting import latency_summary, provenance, run_dir, write_json
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

log = logging.getLogger("soak")

SUBJECT_PREFIX = "soak-"


class Windows:
    """Latencies and errors per window of time, from many threads."""

    def __init__(self, start: float, window: float) -> None:
        self.start, self.window = start, window
        self.latencies: dict[int, list[float]] = {}
        self.errors: dict[int, dict[str, int]] = {}
        self.lock = threading.Lock()

    def _index(self) -> int:
        return int((time.perf_counter() - self.start) // self.window)

    def ok(self, started: float) -> None:
        with self.lock:
            self.latencies.setdefault(self._index(), []).append((time.perf_counter() - started) * 1000.0)

    def failed(self, code: str) -> None:
        with self.lock:
            errors = self.errors.setdefault(self._index(), {})
            errors[code] = errors.get(code, 0) + 1


def soak(args: argparse.Namespace, address: str, server: Any) -> dict[str, Any]:
    with grpc.insecure_channel(address) as control:
        material = prepare(control)
        wait_serving(address, WATCHLIST_SERVICE, None)
        with enrolled_gallery(control, material, args.gallery) as gallery:
            verify = verifier_operations(material)[0]
            identify = identify_operation(material)
            enrol_image = material.chips["biden"][0]
            start = time.perf_counter()
            windows = Windows(start, args.window)
            rss: list[float] = []
            stop = threading.Event()
            serial = itertools.count()

            def client(index: int) -> None:
                with channel_to(address) as channel:
                    calls = [verify.callable_on(channel), identify.callable_on(channel)]
                    stub = wl_grpc.WatchlistStub(channel)
                    for step in itertools.count(index):
                        if stop.is_set():
                            return
                        started = time.perf_counter()
                        try:
                            if step % 3 < 2:
                                operation = (verify, identify)[step % 2]
                                calls[step % 2](operation.requests[step % len(operation.requests)], timeout=args.timeout)
                            else:
                                subject_id = f"{SUBJECT_PREFIX}{next(serial)}"
                                subject = wl.Subject(watchlist=LOADGEN_WATCHLIST, subject_id=subject_id,
                                                     reason="soak", source_agency="benchmarks")
                                stub.EnrollSubject(wl.EnrollSubjectRequest(
                                    subject=subject, samples=[pb.FaceSample(image=pb.Image(data=enrol_image))]),
                                    timeout=args.timeout)
                                stub.RemoveSubject(wl.RemoveSubjectRequest(
                                    watchlist=LOADGEN_WATCHLIST, subject_id=subject_id), timeout=args.timeout)
                            windows.ok(started)
                        except grpc.RpcError as error:
                            windows.failed(error.code().name)

            threads = [threading.Thread(target=client, args=(i,), name=f"soak-{i}") for i in range(args.clients)]
            for thread in threads:
                thread.start()
            count = max(1, round(args.duration / args.window))
            for window in range(count):
                time.sleep(max(0.0, start + (window + 1) * args.window - time.perf_counter()))
                rss.append(server.memory_info().rss / 2**20)
                log.info("window %d: server RSS %.0f MiB, %d calls", window + 1, rss[-1],
                         len(windows.latencies.get(window, [])))
            stop.set()
            for thread in threads:
                thread.join()
    rows = [
        {"window": i + 1, "rss_mib": rss[i], "errors": windows.errors.get(i, {}),
         "latency_ms": latency_summary(windows.latencies.get(i, []))}
        for i in range(len(rss))
    ]
    return {"gallery": gallery, "windows": rows, "verdict": judge(rows, args)}


def judge(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    if len(rows) < 3:
        return {"judged": False, "why": "fewer than three windows: nothing after the warm-up to compare"}
    second, last = rows[1], rows[-1]
    rss_growth = last["rss_mib"] / second["rss_mib"] - 1
    p99_growth = last["latency_ms"]["p99"] / second["latency_ms"]["p99"] - 1
    return {
        "judged": True, "rss_growth": rss_growth, "p99_growth": p99_growth,
        "rss_flat": abs(rss_growth) <= args.rss_tolerance, "p99_flat": abs(p99_growth) <= args.p99_tolerance,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'window':>6s} {'RSS MiB':>8s} {'calls':>6s} {'errors':>6s} {'p50 ms':>7s} {'p99 ms':>7s}"]
    for row in result["windows"]:
        lat = row["latency_ms"]
        p50, p99 = (f"{lat[p]:7.1f}" if lat[p] is not None else f"{'-':>7s}" for p in ("p50", "p99"))
        lines.append(f"{row['window']:6d} {row['rss_mib']:8.0f} {lat['count']:6d} {sum(row['errors'].values()):6d} "
                     f"{p50} {p99}")
    verdict = result["verdict"]
    if verdict["judged"]:
        lines.append(
            f"RSS last vs second window {verdict['rss_growth']:+.1%} ({'flat' if verdict['rss_flat'] else 'NOT flat'}), "
            f"p99 {verdict['p99_growth']:+.1%} ({'flat' if verdict['p99_flat'] else 'NOT flat'})"
        )
    else:
        lines.append(verdict["why"])
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")
    parser.add_argument("--gallery", type=int, default=100, help="LFW people enrolled, when ../shared/data is present")
    parser.add_argument("--rss-tolerance", type=float, default=0.05, help="flat: |last/second - 1| of RSS at most")
    parser.add_argument("--p99-tolerance", type=float, default=0.25, help="flat: |last/second - 1| of p99 at most")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/<timestamp>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = run_dir(args.out)
    with started_server(out / "server-soak.log", {}) as (address, server):
        result = soak(args, address, server)
    write_json(out / "soak.json", {"provenance": provenance(), "arguments": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **result})
    print(table(result))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    # Unwind on SIGTERM too, so that the server this starts is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
