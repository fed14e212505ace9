"""A Milvus standalone server on this machine, for the test suite, the
benchmarks and one development machine (never the production deployment:
README, registry, "Pointing the service at a Milvus cluster").

The server is the one the ``milvus`` package (2.3.5) ships: the real
standalone binary (``bin/milvus run standalone``, reporting v2.3.5-lite) with
its embedded etcd and local storage, started as a child process. Three things
the package leaves to its caller are done here:

- **No orphan.** The package starts the binary with ``subprocess.Popen``; a
  Python process killed by SIGKILL or SIGTERM runs no ``finally`` and leaves
  the server running, holding its ports and memory. Here the binary is started
  through a small launcher that asks the kernel to kill it when its parent
  dies (``PR_SET_PDEATHSIG``) and then execs it, so even a killed test process
  leaves nothing behind; :meth:`LocalMilvus.stop` stops it, and kills it by
  pid as a last resort. The parent is the *thread* that started the server
  (Linux's rule): start it from a thread that outlives it (pytest's main
  thread does).
- **Restart on the same port.** The fault tests stop the server and start it
  again on its port, which the client keeps. The package probes each port by
  binding it without ``SO_REUSEADDR``, which the connections the stopped
  server left in TIME_WAIT refuse for a minute; the probe here sets it (the
  server's own sockets do too).
- **Its own etcd ports.** The server embeds etcd, which listens on etcd's
  defaults (2379, 2380) whatever the package sets, so a second server on the
  machine (another test session, a benchmark) fails to start; each server
  here is given an etcd configuration with free ports of its own.
- **One copy of the binaries.** The package unpacks 246 MB of binaries into
  every base folder (about 6 s); they are unpacked once into a cache folder
  (under a lock: two test sessions may start at once) and linked from each.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# Where the unpacked binaries are kept between runs (per package version).
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "verifier" / "milvus-server"
# How long start() waits for the server's health endpoint, and stop() for SIGTERM to end it (the
# server is then killed: its data is only ever a test's or a benchmark's, and a kill is a fault it recovers from).
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 2.0
_LAUNCHER = """#!{python} -IS
# Written by verifier.vectors.milvus_server: the Milvus binary, killed by the
# kernel when the process that started it dies.
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
    sys.exit("prctl(PR_SET_PDEATHSIG) failed: the server would outlive its parent")
if os.getppid() != {parent}:
    sys.exit("the process that started the Milvus server is gone")
os.environ["LD_LIBRARY_PATH"] = {bin_dir!r} + ":" + os.environ.get("LD_LIBRARY_PATH", "")
os.execv({binary!r}, [{binary!r}, *sys.argv[1:]])
"""


class MilvusUnavailable(RuntimeError):
    """The server cannot be started here (package missing, binary refuses to run, start timed out)."""


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _binaries() -> Path:
    """The unpacked binaries of the installed package, unpacked on first use."""
    try:
        import milvus
    except ImportError as error:
        raise MilvusUnavailable("the milvus package is not installed (pip install '.[milvus]')") from error
    home = CACHE_DIR / milvus.__version__
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be unpacking the same files
        milvus._initialize_data_files(str(home))  # skips files whose checksum is already there
    return home / "bin"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def set_value(text: str, key: str, value: int | float | str) -> str:
    """``text`` (a milvus.yaml) with the scalar at dotted ``key`` (``dataCoord.segment.maxSize``)
    set to ``value``, its comment kept; refused where the file has no such key, so a package
    that renamed one fails loudly instead of serving the default."""
    lines = text.split("\n")
    start, end, found = 0, len(lines), -1
    for depth, name in enumerate(key.split(".")):
        found = next((number for number in range(start, end) if _indent(lines[number]) == 2 * depth
                      and lines[number].lstrip().startswith(f"{name}:")), -1)
        if found < 0:
            raise MilvusUnavailable(f"the package's milvus.yaml has no {key} to set")
        start = found + 1  # the block under it: lines indented deeper (blank lines and comments within)
        end = next((number for number in range(start, end) if lines[number].strip()
                    and not lines[number].lstrip().startswith("#") and _indent(lines[number]) <= 2 * depth), end)
    name, _, rest = lines[found].partition(":")
    current, _, comment = rest.partition(" #")
    if not current.strip():
        raise MilvusUnavailable(f"{key} in the package's milvus.yaml is a section, not a value")
    lines[found] = f"{name}: {value}" + (f" #{comment}" if comment else "")
    return "\n".join(lines)


def configure(text: str, etcd_config: Path, overrides: Mapping[str, int | float | str]) -> str:
    """The package's milvus.yaml ``text`` pointing at ``etcd_config``, with each of
    ``overrides`` (dotted key: value) set."""
    if not text.startswith("etcd:") and "\netcd:\n" not in text:
        raise MilvusUnavailable("the package's milvus.yaml has no etcd section to configure")
    text = text.replace("etcd:\n", f"etcd:\n  config:\n    path: {etcd_config}\n", 1)
    for key, value in overrides.items():
        text = set_value(text, key, value)
    return text


def _is_server(pid: int, binary: Path) -> bool:
    """Whether ``pid`` is still a process running ``binary`` (pids are reused)."""
    try:
        return Path(f"/proc/{pid}/exe").resolve() == binary.resolve()
    except OSError:
        return False


class LocalMilvus:
    """One Milvus standalone server in ``base_dir``, its client port ``port``
    on 127.0.0.1. ``start`` waits until it serves; ``stop`` always ends it."""

    def __init__(self, base_dir: Path, port: int | None = None,
                 overrides: Mapping[str, int | float | str] | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.port = port or free_port()
        # Settings of milvus.yaml by dotted key, for the benchmarks' sweeps (for example
        # dataCoord.segment.maxSize: a search runs one task per sealed segment).
        self.overrides = dict(overrides or {})
        self.pid: int | None = None
        # The embedded etcd's client and peer ports, kept across restarts (its data names them).
        self.etcd_ports: tuple[int, int] | None = None
        self._binary: Path | None = None
        self._server = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`, on the same port and data)."""
        try:
            from milvus import MilvusServer, MilvusServerConfig
        except ImportError as error:
            raise MilvusUnavailable("the milvus package is not installed (pip install '.[milvus]')") from error

        owner = self

        class _Config(MilvusServerConfig):
            def write_config(self) -> None:
                """The package's configuration, with an etcd configuration of this server's own ports."""
                super().write_config()
                client, peer = owner.etcd_ports or (int(self.get("etcd_port")), free_port())
                owner.etcd_ports = (client, peer)
                etcd = owner.base_dir / "configs" / "etcd.yaml"
                etcd.write_text("".join(f"{key}: {value}\n" for key, value in {
                    "listen-client-urls": f"http://127.0.0.1:{client}",
                    "advertise-client-urls": f"http://127.0.0.1:{client}",
                    "listen-peer-urls": f"http://127.0.0.1:{peer}",
                    "initial-advertise-peer-urls": f"http://127.0.0.1:{peer}",
                    "initial-cluster": f"default=http://127.0.0.1:{peer}",
                }.items()))
                milvus_yaml = owner.base_dir / "configs" / "milvus.yaml"
                milvus_yaml.write_text(configure(milvus_yaml.read_text(), etcd, owner.overrides))

            def try_bind_port(self, port: int) -> socket.socket | None:
                """The package's probe, with SO_REUSEADDR: a restart reuses a port in TIME_WAIT."""
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                    sock.listen()
                    return sock
                except OSError:
                    sock.close()
                    return None

        binaries = _binaries()
        self._binary = binaries / "milvus"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        launch_dir = self.base_dir / "launch"
        launch_dir.mkdir(exist_ok=True)
        launcher = launch_dir / "milvus"
        launcher.write_text(_LAUNCHER.format(python=sys.executable, parent=os.getpid(), bin_dir=str(binaries),
                                             binary=str(binaries / "milvus")))
        launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
        if not (self.base_dir / "bin").exists():
            (self.base_dir / "bin").symlink_to(binaries, target_is_directory=True)
        server = MilvusServer(_Config(), wait_for_started=False)
        server.set_base_dir(str(self.base_dir))
        server.listen_port = self.port
        if self.etcd_ports is not None:
            server.config.set("etcd_port", self.etcd_ports[0])
        server.get_milvus_executable_path = lambda: str(launcher)  # type: ignore[method-assign]
        self._server = server
        try:
            server.start()
            self.pid = server.server_proc.pid
            server.wait_started(timeout=START_TIMEOUT_S * 1000)
        except Exception as error:
            self.stop()
            raise MilvusUnavailable(f"the Milvus server did not start: {error} (logs: {self.base_dir / 'logs'})") \
                from error
        log.info("Milvus standalone serving at %s (pid %d, data %s)", self.uri, self.pid, self.base_dir)

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``STOP_GRACE_S``; its pid
        killed whatever the package's own stop did."""
        server, self._server = self._server, None
        pid, self.pid = self.pid, None
        try:
            if server is not None and server.server_proc is not None:
                proc = server.server_proc
                os.kill(proc.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except Exception:  # noqa: BLE001 - killed below
                    log.warning("Milvus server %d ignored SIGTERM for %.0f s; killing it", proc.pid, STOP_GRACE_S)
                server.stop()  # closes its log files; kills the process if still running
        finally:
            if pid is not None and self._binary is not None and _is_server(pid, self._binary):
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_GRACE_S
                while _is_server(pid, self._binary) and time.monotonic() < deadline:
                    time.sleep(0.05)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): a server that accepts connections and never answers."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> "LocalMilvus":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
