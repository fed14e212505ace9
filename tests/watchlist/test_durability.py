"""Durability: a real server process enrolling and removing subjects is killed
with SIGKILL at random moments, round after round, and restarted.

After every restart: each acknowledged enrolment is stored with all its
templates and found by a search, each acknowledged removal is gone, a request
in flight at the kill is either wholly there or wholly absent, and the index
holds exactly the templates the store holds. Every fifth round stops the server
cleanly instead, so the next start loads the saved index (and the kill after it
proves a stale snapshot is not trusted).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.processes import free_port, start_server, wait_watchlist_serving
from tests.watchlist.samples import local_settings, unit_vectors
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.store import WatchlistStore

pytestmark = pytest.mark.slow

ROUNDS = 16
CLEAN_STOP_EVERY = 5
CLIENTS = 2
WATCHLIST = "wanted"


@dataclass
class Ledger:
    """What the clients were told: acknowledged changes must hold, in-flight ones may go either way."""

    enrolled: dict[str, int] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    in_flight: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_number: int = 0

    def take_number(self) -> int:
        with self.lock:
            self.next_number += 1
            return self.next_number


def _subject_id(number: int) -> str:
    return f"S-{number:05d}"


def _templates(engine: FaceEngine, number: int) -> list[pb.Template]:
    vectors = unit_vectors(1 + number % 3, engine.embedder.dimension, seed=number)
    return [pb.Template(model_id=engine.model_id, version=1, dimension=len(v), vector=v.astype("<f4").tobytes())
            for v in vectors]


def _client(stub: wl_grpc.WatchlistStub, engine: FaceEngine, ledger: Ledger, stop: threading.Event) -> None:
    """Enrol subjects one after another, removing every fifth right after; stop at the first failure."""
    while not stop.is_set():
        number = ledger.take_number()
        sid = _subject_id(number)
        templates = _templates(engine, number)
        request = wl.EnrollSubjectRequest(
            subject=wl.Subject(watchlist=WATCHLIST, subject_id=sid, reason="test", source_agency="test"),
            samples=[pb.FaceSample(template=t) for t in templates],
        )
        with ledger.lock:
            ledger.in_flight[sid] = len(templates)
        try:
            stub.EnrollSubject(request, timeout=10)
        except grpc.RpcError:
            return
        with ledger.lock:
            ledger.enrolled[sid] = ledger.in_flight.pop(sid)
        if number % 5:
            continue
        with ledger.lock:
            ledger.in_flight[sid] = ledger.enrolled.pop(sid)
        try:
            stub.RemoveSubject(wl.RemoveSubjectRequest(watchlist=WATCHLIST, subject_id=sid), timeout=10)
        except grpc.RpcError:
            return
        with ledger.lock:
            del ledger.in_flight[sid]
            ledger.removed.add(sid)


def _check(stub: wl_grpc.WatchlistStub, engine: FaceEngine, store_path: Path, ledger: Ledger) -> int:
    """Hold the server and its store to the ledger; settle in-flight requests by what was stored."""
    reader = WatchlistStore.open_readonly(store_path, busy_timeout=5.0)
    try:
        stored = {s.entry.subject_id: s.template_count for s in reader.subjects(WATCHLIST)}
    finally:
        reader.close()
    for sid, count in ledger.enrolled.items():
        assert stored.get(sid) == count, f"acknowledged {sid} ({count} templates) stored as {stored.get(sid)}"
    assert not ledger.removed & set(stored), f"acknowledged removals back: {sorted(ledger.removed & set(stored))}"
    for sid, count in ledger.in_flight.items():
        assert stored.get(sid) in (None, count), f"{sid} half-enrolled: {stored.get(sid)} of {count} templates"
    unexplained = set(stored) - set(ledger.enrolled) - set(ledger.in_flight)
    assert not unexplained, f"stored but never requested: {sorted(unexplained)[:5]}"
    for sid, count in ledger.in_flight.items():
        if sid in stored:
            ledger.enrolled[sid] = count
        else:
            ledger.removed.add(sid)
    ledger.in_flight.clear()

    def search(sid: str) -> wl.IdentifyResponse:
        probe = pb.FaceSample(template=_templates(engine, int(sid.split("-")[1]))[0])
        return stub.Identify(wl.IdentifyRequest(probe=probe, watchlists=[WATCHLIST], top_k=1), timeout=10)

    everyone = [*stored, *sorted(ledger.removed)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = dict(zip(everyone, pool.map(search, everyone)))
    for sid, found in answers.items():
        if sid in stored:
            assert [c.subject_id for c in found.candidates] == [sid], f"{sid} is stored but not found"
            assert found.candidates[0].score > 0.999
        else:
            assert not found.candidates, f"removed {sid} still found"
    galleries = {found.gallery_size for found in answers.values()}
    assert galleries <= {sum(stored.values())}, "the index does not hold what the store holds"
    return len(stored)


def test_acknowledged_changes_survive_sigkill(engine: FaceEngine, settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(20260)
    ledger = Ledger()
    store_path = settings.watchlist.store_file(tmp_path)
    local_settings(settings, tmp_path)
    sources: list[str] = []
    for round_number in range(ROUNDS):
        port, log = free_port(), tmp_path / f"server-{round_number}.log"
        server = start_server(tmp_path, port, log)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                wait_watchlist_serving(channel, server, log)
                stub = wl_grpc.WatchlistStub(channel)
                if round_number == 0:
                    stub.CreateWatchlist(wl.CreateWatchlistRequest(name=WATCHLIST), timeout=10)
                _check(stub, engine, store_path, ledger)
                stop = threading.Event()
                clients = [threading.Thread(target=_client, args=(stub, engine, ledger, stop)) for _ in range(CLIENTS)]
                for client in clients:
                    client.start()
                time.sleep(rng.uniform(0.1, 0.6))
                clean = (round_number + 1) % CLEAN_STOP_EVERY == 0
                if clean:
                    stop.set()
                    for client in clients:
                        client.join()
                    server.send_signal(signal.SIGTERM)
                else:
                    server.send_signal(signal.SIGKILL)
                assert server.wait(timeout=30) == (0 if clean else -signal.SIGKILL)
                stop.set()
                for client in clients:
                    client.join()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        sources.append("snapshot" if "index from snapshot" in log.read_text() else "store")

    port, log = free_port(), tmp_path / "server-final.log"
    server = start_server(tmp_path, port, log)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_watchlist_serving(channel, server, log)
            stored = _check(wl_grpc.WatchlistStub(channel), engine, store_path, ledger)
    finally:
        server.kill()
        server.wait()
    after_clean = [sources[r + 1] for r in range(ROUNDS - 1) if (r + 1) % CLEAN_STOP_EVERY == 0]
    assert after_clean and all(source == "snapshot" for source in after_clean), sources
    assert sources.count("store") >= ROUNDS - len(after_clean), sources
    assert stored > 100 and len(ledger.removed) > 10, (stored, len(ledger.removed))
