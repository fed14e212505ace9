"""Replication benchmarks with real `verifier serve` processes on loopback:

- lag: changes enrolled on the primary at a steady rate (100/s), and when each
  is first held by the replica (its Replication/Status polled every 2 ms):
  p50/p99 of the difference (includes up to one poll interval);
- cold start: a replica with an empty data folder, from start to its
  watch-lists SERVING, against a primary holding N synthetic unit templates
  (the primary's store is filled in bulk by this script, outside the feed);
  --cold-runs replicas are started one after another, each from empty;
- failover: kiosk clients (verifier.client, primary then replica) reading
  Identify in a loop while the primary is SIGKILLed: the longest time without
  an answer and the failed reads;
- sync: the latency of one enrolment on a primary in asynchronous and in
  synchronous mode (acknowledged once a replica holds the change).

    python -m benchmarks.replication [--only lag,cold,failover,sync] [--templates 1000000]

Two shared cores run the primary, the replica and the load here: numbers are
loaded-machine numbers. Results go to benchmarks/results/<time>/replication.json.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.reporting import latency_summary, provenance, run_dir, write_json
from verifier.client import Client
from verifier.config import get_settings
from verifier.pipeline import FaceEngine
from verifier.v1 import replication_pb2 as rp
from verifier.v1 import replication_pb2_grpc as rp_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.store import WatchlistStore

WATCHLIST = "bench"


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server(data: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _port()
    full = {**os.environ, "VERIFIER_DATA_DIR": str(data), "VERIFIER_SERVER__PORT": str(port),
            "VERIFIER_AUDIT__ENABLED": "false", **env}
    log = open(data.parent / f"{data.name}-{port}.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "verifier.cli", "serve"], env=full, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)
        log.close()


def wait_serving(address: str, timeout: float = 600.0) -> float:
    """Seconds until the address reports the Watchlist service SERVING."""
    start = time.perf_counter()
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.perf_counter() - start < timeout:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service="verifier.v1.Watchlist"), timeout=1).status == 1:
                    return time.perf_counter() - start
            except grpc.RpcError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"{address} never served its watch-lists")


def template(engine: FaceEngine, vector: np.ndarray) -> pb.Template:
    return pb.Template(model_id=engine.model_id, version=1, dimension=len(vector), vector=vector.astype("<f4").tobytes())


def unit(count: int, dimension: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def enrol(engine: FaceEngine, number: int, vector: np.ndarray) -> wl.EnrollSubjectRequest:
    return wl.EnrollSubjectRequest(
        subject=wl.Subject(watchlist=WATCHLIST, subject_id=f"B{number:07d}", reason="bench", source_agency="bench"),
        samples=[pb.FaceSample(template=template(engine, vector))],
    )


def init(data: Path) -> None:
    subprocess.run([sys.executable, "-m", "verifier.cli", "watchlist", "init"], check=True, capture_output=True,
                   env={**os.environ, "VERIFIER_DATA_DIR": str(data)})


def seq_of(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return rp_grpc.ReplicationStub(channel).Status(rp.StatusRequest(), timeout=5).seq


def lag(engine: FaceEngine, root: Path, rate: float, seconds: float) -> dict:
    init(root / "a")
    count = int(rate * seconds)
    vectors = unit(count, engine.embedder.dimension, 1)
    with server(root / "a") as (_, primary):
        wait_serving(primary)
        with grpc.insecure_channel(primary) as channel:
            stub = wl_grpc.WatchlistStub(channel)
            stub.CreateWatchlist(wl.CreateWatchlistRequest(name=WATCHLIST))
            with server(root / "b", VERIFIER_REPLICATION__REPLICA_OF=primary) as (_, replica):
                wait_serving(replica)
                base = seq_of(primary)
                acked: dict[int, float] = {}
                seen: dict[int, float] = {}
                done = threading.Event()

                def poll() -> None:
                    with grpc.insecure_channel(replica) as watch:
                        status = rp_grpc.ReplicationStub(watch).Status
                        last = base
                        while not done.is_set() or last < base + count:
                            now_seq = status(rp.StatusRequest(), timeout=5).seq
                            moment = time.perf_counter()
                            for seq in range(last + 1, now_seq + 1):
                                seen[seq] = moment
                            last = max(last, now_seq)
                            time.sleep(0.002)

                poller = threading.Thread(target=poll)
                poller.start()
                start = time.perf_counter()
                for i in range(count):
                    pause = start + i / rate - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    stub.EnrollSubject(enrol(engine, i, vectors[i]), timeout=10)
                    acked[base + i + 1] = time.perf_counter()
                done.set()
                poller.join(timeout=60)
    lags = [(seen[s] - acked[s]) * 1000.0 for s in acked if s in seen]
    return {"changes": count, "rate_per_s": rate, "lag_ms": latency_summary(lags), "missing": count - len(lags)}


def cold_start(engine: FaceEngine, root: Path, templates: int, repeats: int) -> dict:
    init(root / "a")
    path = root / "a" / "watchlist" / "store.sqlite3"
    store = WatchlistStore.open(path, 30.0)
    fill_start = time.perf_counter()
    step = 50_000
    store.create_watchlist(WATCHLIST, "1:N cold-start bench")
    with store._transaction(count=False) as conn:  # bulk setup for the benchmark only: not a change
        for first in range(0, templates, step):
            vectors = unit(min(step, templates - first), engine.embedder.dimension, first)
            conn.executemany(
                "INSERT INTO subjects (id, watchlist, subject_id, external_ref, reason, source_agency, created_at,"
                " expires_at) VALUES (?, ?, ?, '', 'bench', 'bench', 0, NULL)",
                [(first + i + 1, WATCHLIST, f"B{first + i:07d}") for i in range(len(vectors))],
            )
            conn.executemany(
                "INSERT INTO templates (subject, position, model_id, version, vector) VALUES (?, 0, ?, 1, ?)",
                [(first + i + 1, engine.model_id, v.astype("<f4").tobytes()) for i, v in enumerate(vectors)],
            )
    store.close()
    filled = time.perf_counter() - fill_start
    size = path.stat().st_size
    runs = []
    with server(root / "a") as (_, primary):
        primary_ready = wait_serving(primary)
        for run in range(repeats):
            # Each replica starts empty, from its own process start to SERVING.
            with server(root / f"b{run}", VERIFIER_REPLICATION__REPLICA_OF=primary) as (_, replica):
                runs.append(wait_serving(replica))
    return {"templates": templates, "store_bytes": size, "fill_s": round(filled, 1),
            "primary_start_s": round(primary_ready, 2), "replica_to_serving_s": [round(r, 2) for r in runs],
            "median_s": round(float(np.median(runs)), 2), "goal_s": 10.0,
            "stages": _stages(root.glob("[ab]*.log"))}


def _stages(logs: Iterator[Path]) -> list[str]:
    """The servers' own account of where the cold start went (their timed log lines)."""
    marks = ("snapshot at change", "snapshot of", "index from", "serving verifier", "does not match", "sending the snapshot")
    return sorted(line.strip() for log in logs for line in log.read_text(errors="replace").splitlines()
                  if any(mark in line for mark in marks))


def failover(engine: FaceEngine, root: Path, seconds: float, readers: int) -> dict:
    init(root / "a")
    vectors = unit(20, engine.embedder.dimension, 7)
    with server(root / "a") as (primary_process, primary):
        wait_serving(primary)
        with grpc.insecure_channel(primary) as channel:
            stub = wl_grpc.WatchlistStub(channel)
            stub.CreateWatchlist(wl.CreateWatchlistRequest(name=WATCHLIST))
            for i, vector in enumerate(vectors):
                stub.EnrollSubject(enrol(engine, i, vector))
        with server(root / "b", VERIFIER_REPLICATION__REPLICA_OF=primary) as (_, replica):
            wait_serving(replica)
            while seq_of(replica) < seq_of(primary):
                time.sleep(0.05)
            answers: list[float] = []
            failed: list[str] = []
            stop = threading.Event()
            with Client([primary, replica]) as kiosk:
                while kiosk.current() != primary:
                    time.sleep(0.01)

                def read(offset: int) -> None:
                    i = offset
                    while not stop.is_set():
                        request = wl.IdentifyRequest(probe=pb.FaceSample(template=template(engine, vectors[i % 20])))
                        try:
                            kiosk.identify(request, timeout=5)
                            answers.append(time.perf_counter())
                        except grpc.RpcError as error:
                            failed.append(error.code().name)
                        i += 1

                threads = [threading.Thread(target=read, args=(n,)) for n in range(readers)]
                for thread in threads:
                    thread.start()
                time.sleep(seconds / 2)
                killed = time.perf_counter()
                primary_process.kill()
                time.sleep(seconds / 2)
                stop.set()
                for thread in threads:
                    thread.join()
                now_on = kiosk.current()
    after = sorted(t for t in answers if t >= killed)
    before = max((t for t in answers if t < killed), default=killed)
    first_after = after[0] if after else float("nan")
    gaps = np.diff([before, *after]) if after else np.array([float("nan")])
    return {"readers": readers, "reads": len(answers), "failed_reads": len(failed),
            "first_answer_after_kill_ms": round((first_after - killed) * 1000, 1),
            "longest_gap_without_answer_ms": round(float(gaps.max()) * 1000, 1),
            "client_on_replica_after": now_on == replica, "goal_ms": 2000}


def sync_cost(engine: FaceEngine, root: Path, changes: int) -> dict:
    results = {}
    for mode in ("asynchronous", "synchronous"):
        data = root / mode
        init(data / "a")
        vectors = unit(changes, engine.embedder.dimension, 11)
        env = {"VERIFIER_REPLICATION__SYNCHRONOUS": str(mode == "synchronous").lower()}
        with server(data / "a", **env) as (_, primary):
            wait_serving(primary)
            with server(data / "b", VERIFIER_REPLICATION__REPLICA_OF=primary) as (_, replica):
                wait_serving(replica)
                with grpc.insecure_channel(primary) as channel:
                    stub = wl_grpc.WatchlistStub(channel)
                    stub.CreateWatchlist(wl.CreateWatchlistRequest(name=WATCHLIST))
                    took = []
                    for i in range(changes):
                        start = time.perf_counter()
                        stub.EnrollSubject(enrol(engine, i, vectors[i]), timeout=10)
                        took.append((time.perf_counter() - start) * 1000.0)
        results[mode] = latency_summary(took)
    results["added_p50_ms"] = round(results["synchronous"]["p50"] - results["asynchronous"]["p50"], 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="lag,cold,failover,sync")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the lag run")
    parser.add_argument("--templates", type=int, default=1_000_000)
    parser.add_argument("--cold-runs", type=int, default=3, help="replicas started one after another from empty")
    parser.add_argument("--failover-seconds", type=float, default=6.0)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--sync-changes", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    engine = FaceEngine.from_settings(get_settings())
    wanted = set(args.only.split(","))
    report: dict = {"provenance": provenance()}
    with tempfile.TemporaryDirectory(prefix="replication-bench-") as scratch:
        root = Path(scratch)
        for name, run in (
            ("lag", lambda r: lag(engine, r, args.rate, args.seconds)),
            ("cold", lambda r: cold_start(engine, r, args.templates, args.cold_runs)),
            ("failover", lambda r: failover(engine, r, args.failover_seconds, args.readers)),
            ("sync", lambda r: sync_cost(engine, r, args.sync_changes)),
        ):
            if name in wanted:
                (root / name).mkdir()
                report[name] = run(root / name)
                print(name, report[name], flush=True)
    out = run_dir(args.out)
    write_json(out / "replication.json", report)
    print(f"written to {out / 'replication.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
