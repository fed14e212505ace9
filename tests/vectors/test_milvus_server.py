"""The Milvus standalone server the tests start, and what the service relies on
from it: no server outlives the process that started it, and a write
acknowledged by MilvusIndex is seen by every search that starts after it, from
any thread and any connection of the process (Session consistency, writes read
back)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from verifier.vectors.milvus_server import LocalMilvus, MilvusUnavailable, _is_server, configure

DIMENSION = 32
WRITERS, PER_WRITER, SEARCHERS = 4, 10, 4

_STARTER = """
import sys, time
from pathlib import Path
from verifier.vectors.milvus_server import LocalMilvus
server = LocalMilvus(Path(sys.argv[1]))
server.start()
print(server.pid, flush=True)
time.sleep(600)
"""


def _units(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_killed_test_process_leaves_no_server_behind(tmp_path: Path) -> None:
    pytest.importorskip("milvus", reason="the milvus package is not installed (pip install '.[milvus]')")
    starter = subprocess.Popen([sys.executable, "-c", _STARTER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        line = starter.stdout.readline() if starter.stdout else ""
        if not line.strip().isdigit():
            pytest.skip(f"no Milvus server here (the starter said {line!r})")
        pid = int(line)
        binary = Path(os.readlink(f"/proc/{pid}/exe"))
        assert _is_server(pid, binary)
    finally:
        starter.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel can stop the server now
        starter.wait()
    deadline = time.monotonic() + 10
    while _is_server(pid, binary):
        assert time.monotonic() < deadline, f"the Milvus server {pid} outlived the process that started it"
        time.sleep(0.1)


def test_an_acknowledged_write_is_seen_by_every_later_search(milvus_server: LocalMilvus) -> None:
    """Writers add vectors from several threads; each acknowledged id is handed
    to searchers on another connection, whose search starts after the
    acknowledgement and must find it first; then each is removed, and no search
    after the removal is acknowledged finds it."""
    from verifier.vectors.milvus_index import MilvusIndex

    writer = MilvusIndex(milvus_server.uri, "acknowledged", DIMENSION)
    reader = MilvusIndex(milvus_server.uri, "acknowledged", DIMENSION)
    writer.clear()
    writer.add(np.arange(1, 2001, dtype=np.int64), _units(2000, 1))  # a gallery to be found among
    vectors = _units(WRITERS * PER_WRITER, 2)
    acknowledged: queue.Queue[int | None] = queue.Queue()
    removed: queue.Queue[int | None] = queue.Queue()
    failures: list[str] = []

    def write(first: int) -> None:
        for row in range(first, first + PER_WRITER):
            writer.add(np.array([10_000 + row]), vectors[row:row + 1])
            acknowledged.put(row)

    def search(incoming: queue.Queue[int | None], present: bool) -> None:
        while (row := incoming.get()) is not None:
            _, ids = reader.search(vectors[row], 3)
            if (len(ids) > 0 and ids[0] == 10_000 + row) != present:
                failures.append(f"{'added' if present else 'removed'} {10_000 + row}: search answered {ids.tolist()}")

    def remove(first: int) -> None:
        for row in range(first, first + PER_WRITER):
            writer.remove(np.array([10_000 + row]))
            removed.put(row)

    try:
        for work, incoming, present in ((write, acknowledged, True), (remove, removed, False)):
            searchers = [threading.Thread(target=search, args=(incoming, present)) for _ in range(SEARCHERS)]
            writers = [threading.Thread(target=work, args=(w * PER_WRITER,)) for w in range(WRITERS)]
            for thread in searchers + writers:
                thread.start()
            for thread in writers:
                thread.join()
            for _ in searchers:
                incoming.put(None)
            for thread in searchers:
                thread.join()
        assert not failures, failures
        assert reader.size() == 2000
    finally:
        writer.clear()
        writer.close()
        reader.close()


def _package_template() -> str:
    milvus = pytest.importorskip("milvus", reason="the milvus package is not installed (pip install '.[milvus]')")
    return (Path(milvus.__file__).parent / "data" / "config.yaml.template").read_text()


def test_settings_are_set_in_the_packages_own_configuration(tmp_path: Path) -> None:
    template = _package_template()
    text = configure(template, tmp_path / "etcd.yaml", {"dataCoord.segment.maxSize": 128,
                                                        "queryNode.segcore.knowhereThreadPoolNumRatio": 1})
    etcd = f"etcd:\n  config:\n    path: {tmp_path / 'etcd.yaml'}\n"
    assert etcd in text
    changed = [(old, new) for old, new in zip(template.split("\n"), text.replace(etcd, "etcd:\n").split("\n"))
               if old != new]
    assert sorted(changed) == [("    knowhereThreadPoolNumRatio: 4", "    knowhereThreadPoolNumRatio: 1"),
                               ("    maxSize: 512 # Maximum size of a segment in MB",
                                "    maxSize: 128 # Maximum size of a segment in MB")]
    # Another section's key of the same name is left alone (dataNode.segment has no maxSize; log.file has one).
    assert "  segment:\n    insertBufSize: 16777216" in text


def test_a_setting_the_configuration_lacks_is_refused(tmp_path: Path) -> None:
    template = _package_template()
    for key in ("dataCoord.segment.largest", "dataCoord.segmentation.maxSize", "nowhere.segment.maxSize"):
        with pytest.raises(MilvusUnavailable, match="no " + re.escape(key)):
            configure(template, tmp_path / "e.yaml", {key: 128})
    with pytest.raises(MilvusUnavailable, match="section"):
        configure(template, tmp_path / "e.yaml", {"dataCoord.segment": 1})
    with pytest.raises(MilvusUnavailable, match="etcd"):
        configure(template.replace("etcd:\n", "etc:\n"), tmp_path / "e.yaml", {})
