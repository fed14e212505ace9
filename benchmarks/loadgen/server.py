"""The server under load: ``verifier serve`` started on a free loopback port
(stopped with this process, however it ends), waited for through the health
service, or found listening at a given address."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from verifier.config import REPO_ROOT
from verifier.v1 import registry_pb2 as rg
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import watchlist_pb2 as wl

VERIFIER_SERVICE = pb.DESCRIPTOR.services_by_name["FaceVerifier"].full_name
WATCHLIST_SERVICE = wl.DESCRIPTOR.services_by_name["Watchlist"].full_name
REGISTRY_SERVICE = rg.DESCRIPTOR.services_by_name["Registry"].full_name
# The `verifier` command of the environment this runs in.
SERVE_COMMAND = [str(Path(sys.executable).with_name("verifier")), "serve"]

SERVER_START_TIMEOUT_S = 120.0
SERVER_STOP_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


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


def health_status(channel: grpc.Channel, service: str) -> int | None:
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
                if health_status(channel, service) == health_pb2.HealthCheckResponse.SERVING:
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


def listening_process(address: str) -> psutil.Process | None:
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

def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("VERIFIER_"):
            raise argparse.ArgumentTypeError(f"--server-env takes VERIFIER_<GROUP>__<NAME>=VALUE, not {pair!r}")
        env[key] = value
    return env
