"""A real `verifier serve` process on a loopback port, for tests that kill,
starve or misconfigure a server: its output is drained from a pipe (so a file
size limit on the process cannot touch the test's log), and it is killed when
the block ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_TIMEOUT_S = 120.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`verifier ARGS` with its data in ``data_dir``."""
    full = {**os.environ, "VERIFIER_DATA_DIR": str(data_dir), **(env or {})}
    return subprocess.run([sys.executable, "-m", "verifier.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=full)


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`verifier serve` with the watch-lists on, its output in ``log`` (a file that
    outlives the process, for tests that SIGKILL it and read what it said)."""
    env = {**os.environ, "VERIFIER_DATA_DIR": str(data_dir), "VERIFIER_SERVER__PORT": str(port),
           "VERIFIER_SERVER__HOST": "127.0.0.1", "VERIFIER_WATCHLIST__ENABLED": "true"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "verifier.cli", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_watchlist_serving(channel: grpc.Channel, server: subprocess.Popen[bytes], log: Path) -> None:
    """Until the Watchlist service reports SERVING; fails if the server exits first."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, f"server exited: {log.read_text()[-2000:]}"
        try:
            state = health.Check(health_pb2.HealthCheckRequest(service="verifier.v1.Watchlist"), timeout=1).status
            if state == SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"watch-list never became ready: {log.read_text()[-2000:]}")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    address: str
    output: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.output)

    def health(self, channel: grpc.Channel, service: str) -> int:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2).status

    def wait_health(self, channel: grpc.Channel, service: str, status: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited: {self.log[-3000:]}"
            try:
                if self.health(channel, service) == status:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{service or 'server'} never reached health {status}: {self.log[-3000:]}")


def _drain(stream, into: list[str]) -> None:  # noqa: ANN001 - a binary pipe
    for line in iter(stream.readline, b""):
        into.append(line.decode("utf-8", "replace"))


# argv[1]: the soft file-size limit; the rest: the command to exec with it.
_LIMITED_LAUNCHER = (
    "import os, resource, signal, sys; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY)); "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


@contextmanager
def serving(
    data_dir: Path, env: dict[str, str] | None = None, file_size_limit: int | None = None
) -> Iterator[ServerProcess]:
    """`verifier serve` on a free loopback port, up once FaceVerifier reports SERVING.
    ``file_size_limit``: a soft RLIMIT_FSIZE for the server, with SIGXFSZ ignored
    so that a write past it fails (EFBIG) as on a full disk instead of killing
    it. Set by a launcher that then execs the server, not by ``preexec_fn``,
    which is unsafe in this multi-threaded test process (gRPC's and
    OpenVINO's threads: a child aborted in gRPC's poller)."""
    port = free_port()
    full = {**os.environ, "VERIFIER_DATA_DIR": str(data_dir), "VERIFIER_SERVER__HOST": "127.0.0.1",
            "VERIFIER_SERVER__PORT": str(port), **(env or {})}
    command = [sys.executable, "-m", "verifier.cli", "serve"]
    if file_size_limit is not None:
        command = [sys.executable, "-c", _LIMITED_LAUNCHER, str(file_size_limit), *command]
    process = subprocess.Popen(command, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = ServerProcess(process, f"127.0.0.1:{port}")
    drain = threading.Thread(target=_drain, args=(process.stdout, server.output), daemon=True)
    drain.start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            server.wait_health(channel, "verifier.v1.FaceVerifier", SERVING, START_TIMEOUT_S)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        drain.join(timeout=5)
