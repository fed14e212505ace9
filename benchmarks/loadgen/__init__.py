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
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import psutil

from benchmarks.loadgen.drivers import WARMUP_CALLS, Usage, closed_loop, level_result, open_loop
from benchmarks.loadgen.operations import (
    Operation,
    enrolled_gallery,
    identify_operation,
    prepare,
    registered_traveller,
    traveller_operation,
    verifier_operations,
)
from benchmarks.loadgen.report import describe, evaluate_targets, plot, table
from benchmarks.loadgen.server import (
    REGISTRY_SERVICE,
    WATCHLIST_SERVICE,
    channel_to,
    health_status,
    listening_process,
    parse_env,
    started_server,
    wait_serving,
)
from benchmarks.reporting import provenance, run_dir, write_json

log = logging.getLogger("loadgen")


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
        if (not args.ops or "identify" in args.ops) and health_status(control, WATCHLIST_SERVICE) is not None:
            wait_serving(address, WATCHLIST_SERVICE, None)
            gallery = stack.enter_context(enrolled_gallery(control, material, args.gallery))
            operations.append(identify_operation(material))
        if (not args.ops or "verify-traveller" in args.ops) and health_status(control, REGISTRY_SERVICE) is not None:
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
    plot(runs, "closed", out / "loadgen-closed.png")
    plot(runs, "open", out / "loadgen-open.png")
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
            runs.append(level_result(recorder, wall, usage, "closed", concurrency, None))
            log.info(describe(runs[-1]))
        for rate in args.rates:
            usage = Usage(server)
            recorder, wall = open_loop(
                operation, address, rate, args.duration, args.max_requests, args.timeout, usage, args.seed
            )
            runs.append(level_result(recorder, wall, usage, "open", None, rate))
            log.info(describe(runs[-1]))
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
        results = run(args, args.target, listening_process(args.target), out)
    else:
        with started_server(out / "server.log", parse_env(args.server_env)) as (address, server):
            results = run(args, address, server, out)
        print(_operating_point(out / "server.log"))
    print(f"CPU: {results['provenance']['cpu']}; features: {' '.join(results['provenance']['cpu_features'])}")
    print(table(results["runs"], results["targets"]))
    print(f"results: {out}")
    return 0

