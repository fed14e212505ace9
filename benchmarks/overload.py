"""Overload benchmark: admission control off and on, side by side, on one machine.

    .venv/bin/python -m benchmarks.overload [--duration 30] [--clients 64] [--deadline 1.0]
                                            [--out DIR]

For each setting (``before``: ``VERIFIER_ADMISSION__ENABLED=false``; ``after``:
admission on) it starts ``verifier serve`` on loopback (server and load share
the machine's cores) and measures, each for ``--duration`` seconds:

1. peak: 4 closed-loop gates sending two-image Verify calls with a ``--deadline``;
2. overload: ``--clients`` such gates; goodput is OK answers within the deadline
   per second, judged against 90 % of the peak of 1., and the p99 of OK answers
   against the deadline;
3. bulk: the 4 gates beside 4 senders of Verify calls with two maximum-cost
   images (a 4096x3072 WEBP live frame against a 2.5 Mpixel JPEG 2000 chip
   photo, the costliest the default limits accept) multiplexed on one
   connection, one bulk client; the gates' throughput is judged against 80 %
   of theirs in 1.

Every loopback client has the same host, so the ``after`` server tells callers
apart by connection (``VERIFIER_ADMISSION__CALLER_KEY=connection``): each gate
is one caller, the bulk client another, as distinct hosts would be in service.
A client refused OVERLOADED waits as long as the refusal asks (its RetryInfo),
or ``--backoff`` seconds when it does not say, as a gate should; one whose call
passed its deadline tries again at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil

from benchmarks.loadgen.drivers import REFUSAL_BACKOFF_S, Recorder, Usage, run_clients, wait_as_told
from benchmarks.loadgen.operations import Operation, prepare, sdist_photos, verifier_operations
from benchmarks.loadgen.server import channel_to, parse_env, started_server
from benchmarks.reporting import latency_summary, provenance, run_dir, write_json
from benchmarks.samples import max_cost_chip, max_cost_live_frame
from verifier.v1 import verifier_pb2 as pb

log = logging.getLogger("overload")

SETTINGS = {
    "before": {"VERIFIER_ADMISSION__ENABLED": "false"},
    "after": {"VERIFIER_ADMISSION__ENABLED": "true", "VERIFIER_ADMISSION__CALLER_KEY": "connection"},
}
PEAK_CLIENTS = 4
BULK_SENDERS = 4
GOODPUT_OF_PEAK = 0.90
KIOSK_KEPT = 0.80
WARMUP_CALLS = 5
# The photos stretched into the bulk images: two of one person, so the bulk calls match.
BULK_PHOTOS = ("obama.jpg", "obama2.jpg")


@dataclass(frozen=True)
class Group:
    """Closed-loop clients sending one operation: ``clients`` threads over ``channels`` connections."""

    name: str
    operation: Operation
    clients: int
    channels: int


def drive(
    groups: Sequence[Group], address: str, duration: float, deadline: float, backoff: float, usage: Usage
) -> dict[str, tuple[Recorder, float]]:
    """Every group's clients at once for ``duration`` seconds; each group's recorder and the wall time."""
    recorders = {group.name: Recorder(group.operation) for group in groups}
    channels = {group.name: [channel_to(address) for _ in range(group.channels)] for group in groups}
    total = sum(group.clients for group in groups)
    clock: dict[str, float] = {}
    ready = threading.Barrier(total + 1, action=lambda: clock.update(start=time.perf_counter()))

    def client(group: Group, index: int) -> None:
        recorder = recorders[group.name]
        call = group.operation.callable_on(channels[group.name][index % group.channels])
        requests = group.operation.requests
        ready.wait()
        end = clock["start"] + duration
        i = index
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                recorder.success(started, call(requests[i % len(requests)], timeout=deadline))
            except grpc.RpcError as error:
                recorder.failure(error.code().name)
                wait_as_told(error, end, backoff)
            i += 1

    threads = [
        threading.Thread(target=client, args=(group, i), name=f"{group.name}-{i}")
        for group in groups for i in range(group.clients)
    ]
    try:
        run_clients(threads, ready, usage)
        wall = time.perf_counter() - clock["start"]
    finally:
        for opened in channels.values():
            for channel in opened:
                channel.close()
    return {name: (recorder, wall) for name, recorder in recorders.items()}


def summary(recorder: Recorder, wall: float, deadline: float) -> dict[str, Any]:
    within = [ms for ms in recorder.latencies_ms if ms <= deadline * 1000.0]
    return {
        "ok": len(recorder.latencies_ms),
        "errors": dict(recorder.errors),
        "unexpected": recorder.unexpected,
        "throughput_rps": len(recorder.latencies_ms) / wall,
        "goodput_rps": len(within) / wall,
        "shed": recorder.errors.get("RESOURCE_EXHAUSTED", 0),
        "late": recorder.errors.get("DEADLINE_EXCEEDED", 0),
        "latency_ms": latency_summary(recorder.latencies_ms),
        "wall_s": wall,
    }


def bulk_operation(photos: dict[str, bytes]) -> Operation:
    """A Verify of the costliest live frame against the costliest chip photo the limits allow."""
    probe, reference = max_cost_live_frame(photos[BULK_PHOTOS[0]]), max_cost_chip(photos[BULK_PHOTOS[1]])
    return Operation(
        "verify-max-cost", f"/{pb.DESCRIPTOR.services_by_name['FaceVerifier'].full_name}/Verify",
        [pb.VerifyRequest(probe=pb.Image(data=probe), reference=pb.FaceSample(image=pb.Image(data=reference)))],
        pb.VerifyResponse, lambda r: bool(r.match),
    )


def measure_setting(args: argparse.Namespace, address: str, server: psutil.Process) -> dict[str, Any]:
    """The three phases against one running server."""
    with grpc.insecure_channel(address) as control:
        material = prepare(control)
    kiosk = verifier_operations(material)[0]
    bulk = bulk_operation(sdist_photos())
    with channel_to(address) as channel:
        for operation in (kiosk, bulk):
            call = operation.callable_on(channel)
            for i in range(WARMUP_CALLS):
                call(operation.requests[i % len(operation.requests)], timeout=30)

    def phase(name: str, groups: list[Group]) -> dict[str, Any]:
        usage = Usage(server)
        results = drive(groups, address, args.duration, args.deadline, args.backoff, usage)
        out = {group: summary(rec, wall, args.deadline) for group, (rec, wall) in results.items()}
        out["usage"] = usage.report
        log.info("%s: %s", name, {g: f"{r['goodput_rps']:.1f}/s" for g, r in out.items() if g != "usage"})
        return out

    gates = Group("kiosk", kiosk, PEAK_CLIENTS, PEAK_CLIENTS)
    return {
        "peak": phase("peak", [gates]),
        "overload": phase("overload", [Group("kiosk", kiosk, args.clients, args.clients)]),
        "bulk": phase("bulk", [gates, Group("bulk", bulk, BULK_SENDERS, 1)]),
        "bulk_image_bytes": len(bulk.requests[0].probe.data),
    }


def verdicts(result: dict[str, Any], deadline: float) -> dict[str, Any]:
    peak = result["peak"]["kiosk"]["throughput_rps"]
    over = result["overload"]["kiosk"]
    loaded = result["bulk"]["kiosk"]["throughput_rps"]
    p99 = over["latency_ms"]["p99"]
    return {
        "goodput_of_peak": over["goodput_rps"] / peak if peak else 0.0,
        "goodput_met": peak > 0 and over["goodput_rps"] >= GOODPUT_OF_PEAK * peak,
        "p99_met": p99 is not None and p99 < deadline * 1000.0,
        "kiosk_kept": loaded / peak if peak else 0.0,
        "kiosk_met": peak > 0 and loaded >= KIOSK_KEPT * peak,
    }


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    def cell(value: float | None, form: str = "7.1f") -> str:
        return format(value, form) if value is not None else f"{'-':>7s}"

    names = list(results)
    lines = [f"{'':34s}" + "".join(f"{name:>12s}" for name in names), "-" * (34 + 12 * len(names))]
    rows = [
        ("peak, 4 gates: per s", lambda r: r["peak"]["kiosk"]["throughput_rps"]),
        (f"{args.clients} gates: goodput per s", lambda r: r["overload"]["kiosk"]["goodput_rps"]),
        ("  goodput / peak", lambda r: 100 * r["verdicts"]["goodput_of_peak"]),
        ("  p50 of OK answers, ms", lambda r: r["overload"]["kiosk"]["latency_ms"]["p50"]),
        ("  p99 of OK answers, ms", lambda r: r["overload"]["kiosk"]["latency_ms"]["p99"]),
        ("  refused OVERLOADED", lambda r: r["overload"]["kiosk"]["shed"]),
        ("  past the deadline", lambda r: r["overload"]["kiosk"]["late"]),
        ("4 gates + bulk: gates per s", lambda r: r["bulk"]["kiosk"]["throughput_rps"]),
        ("  gates kept, % of peak", lambda r: 100 * r["verdicts"]["kiosk_kept"]),
        ("  bulk calls answered per s", lambda r: r["bulk"]["bulk"]["throughput_rps"]),
        ("  bulk refused OVERLOADED", lambda r: r["bulk"]["bulk"]["shed"]),
        ("server cores busy, overload", lambda r: r["overload"]["usage"]["server"]["cpu_cores"]),
        ("other processes' cores, max", lambda r: max(r[p]["usage"]["others"]["cpu_cores"] for p in
                                                        ("peak", "overload", "bulk"))),
    ]
    for label, pick in rows:
        lines.append(f"{label:34s}" + "".join(f"{cell(float(pick(results[n])), '12.1f')}" for n in names))
    for name in names:
        v = results[name]["verdicts"]
        lines.append(
            f"{name}: goodput >= {GOODPUT_OF_PEAK:.0%} of peak {'met' if v['goodput_met'] else 'MISSED'}; "
            f"p99 < {args.deadline:g} s {'met' if v['p99_met'] else 'MISSED'}; "
            f"gates keep >= {KIOSK_KEPT:.0%} beside bulk {'met' if v['kiosk_met'] else 'MISSED'}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks.overload", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=64, help="closed-loop gates in the overload phase")
    parser.add_argument("--deadline", type=float, default=1.0, help="deadline of every call, seconds")
    parser.add_argument("--backoff", type=float, default=REFUSAL_BACKOFF_S,
                        help="pause after an OVERLOADED refusal that names no retry delay, seconds")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--server-env", nargs="*", default=[], metavar="VERIFIER_X__Y=V",
                        help="more settings for both servers")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/<timestamp>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = run_dir(args.out)
    results: dict[str, dict[str, Any]] = {}
    for name in args.settings:
        env = {**parse_env(args.server_env), **SETTINGS[name]}
        with started_server(out / f"server-{name}.log", env) as (address, server):
            results[name] = measure_setting(args, address, server)
        results[name]["server_env"] = env
        results[name]["verdicts"] = verdicts(results[name], args.deadline)
    write_json(out / "overload.json", {
        "provenance": provenance(),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
    })
    print(table(results, args))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    # Unwind on SIGTERM too, so that the servers this starts are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
