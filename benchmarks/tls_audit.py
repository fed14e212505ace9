"""What mutual TLS and the audit trail cost Verify: two servers side by side in
one run, one with neither (no TLS, audit off) and one with both (mutual TLS
with a kiosk certificate, every decision audited), loaded in turns with the
same closed loop of gate pairs, so that noise from the machine falls on both.

    .venv/bin/python -m benchmarks.tls_audit [--duration 20 --turns 3 --concurrency 4]

Writes ``tls_audit.json`` to a ``benchmarks/results/<timestamp>/`` folder and
prints throughput and p99 for each and the throughput lost (goal: at most 10 %).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from benchmarks.loadgen.drivers import WARMUP_CALLS, Usage, closed_loop, level_result
from benchmarks.loadgen.operations import prepare, verifier_operations
from benchmarks.loadgen.server import channel_to, started_server
from benchmarks.reporting import latency_summary, provenance, run_dir, write_json
from verifier.security.certs import init_dev_ca

log = logging.getLogger("benchmarks.tls_audit")
GOAL_MAX_LOSS = 0.10


def tls_channel(tls_dir: Path, address: str) -> grpc.Channel:
    """A kiosk's own mutual-TLS connection."""
    credentials = grpc.ssl_channel_credentials(
        (tls_dir / "ca.pem").read_bytes(), (tls_dir / "kiosk.key").read_bytes(), (tls_dir / "kiosk.pem").read_bytes()
    )
    return grpc.secure_channel(address, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per turn")
    parser.add_argument("--turns", type=int, default=2, help="turns per configuration, interleaved")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--operation", default="verify-images", choices=("verify-images", "verify-template"))
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--out", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = run_dir(args.out)
    with ExitStack() as stack:
        tls_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tls-audit-")))
        init_dev_ca(tls_dir)
        configs: dict[str, tuple[str, Any, Callable[[str], grpc.Channel]]] = {}
        for name, env, channels in (
            ("off", {"VERIFIER_AUDIT__ENABLED": "false"}, channel_to),
            ("on", {"VERIFIER_AUDIT__ENABLED": "true", "VERIFIER_SECURITY__TLS_DIR": str(tls_dir)},
             partial(tls_channel, tls_dir)),
        ):
            address, process = stack.enter_context(
                started_server(out / f"server-{name}.log", {**env, "VERIFIER_WATCHLIST__ENABLED": "false"}, channels)
            )
            configs[name] = (address, process, channels)
        with channel_to(configs["off"][0]) as channel:
            operation = next(op for op in verifier_operations(prepare(channel)) if op.name == args.operation)
        for address, _, channels in configs.values():
            with channels(address) as channel:
                call = operation.callable_on(channel)
                for i in range(WARMUP_CALLS):
                    call(operation.requests[i % len(operation.requests)], timeout=args.timeout)
        turns: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
        latencies: dict[str, list[float]] = {name: [] for name in configs}
        for turn in range(args.turns):
            for name, (address, process, channels) in configs.items():
                usage = Usage(process)
                recorder, wall = closed_loop(operation, address, args.concurrency, args.duration, 10**9, args.timeout,
                                             usage, channels)
                turns[name].append(level_result(recorder, wall, usage, "closed", args.concurrency, None))
                latencies[name] += recorder.latencies_ms
                log.info("turn %d %s: %.1f/s p99 %.1f ms", turn + 1, name, turns[name][-1]["throughput_rps"],
                         turns[name][-1]["latency_ms"]["p99"])
    summary = {
        name: {
            "throughput_rps": sum(t["ok"] for t in runs) / sum(t["wall_s"] for t in runs),
            "latency_ms": latency_summary(latencies[name]),
            "errors": sum(t["error_count"] for t in runs),
        }
        for name, runs in turns.items()
    }
    loss = 1 - summary["on"]["throughput_rps"] / summary["off"]["throughput_rps"]
    write_json(out / "tls_audit.json", {"provenance": provenance(), "args": vars(args) | {"out": str(out)},
                                        "turns": turns, "summary": summary, "throughput_loss": loss})
    lines = [f"{operation.name}, concurrency {args.concurrency}, {args.turns} x {args.duration:g} s each",
             f"{'':24s} {'throughput/s':>12s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s}"]
    for name, label in (("off", "no TLS, audit off"), ("on", "mutual TLS + audit")):
        row = summary[name]
        lines.append(f"{label:24s} {row['throughput_rps']:12.1f} {row['latency_ms']['p50']:8.1f} "
                     f"{row['latency_ms']['p99']:8.1f} {row['errors']:7d}")
    verdict = "met" if loss <= GOAL_MAX_LOSS else "NOT met"
    lines.append(f"throughput lost: {loss * 100:.1f} % (goal at most {GOAL_MAX_LOSS * 100:.0f} %: {verdict})")
    report = "\n".join(lines)
    (out / "tls_audit.txt").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
