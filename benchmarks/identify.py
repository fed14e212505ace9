"""Identify latency through gRPC, and exact search alone at 10k, 100k and 1M templates, on one core.

    .venv/bin/python -m benchmarks.identify [--gallery 2000] [--requests 200] [--sizes 10000,100000,1000000]

1. A real server on loopback with a fresh watch-list: one real person (enrolled
   from a chip-like photo) among ``--gallery`` random unit templates of the
   model. One client sends Identify requests one after another, with a 640x480
   gate frame cut from another photo of that person, then with the frame's
   template; p50/p99 as the client saw them, and the server's own search time.
2. The index alone: seeded random unit vectors of the model's dimension at each
   size (the search cost depends on the size, not on what the vectors show),
   one query at a time; raw FAISS (``IndexIDMap2`` over ``IndexFlatIP``, k=10)
   and the watch-list index's search (FAISS plus best-per-subject and expiry),
   and the memory the index took (resident set growth). FAISS is held to one
   OpenMP thread; a single query does not use more anyway.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import tempfile
import time
from pathlib import Path

import faiss
import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.samples import capture_jpeg, chip_jpeg
from verifier.app import build_service, start_server
from verifier.config import get_settings
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest
from verifier.pipeline import FaceEngine
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.index import WatchlistIndex, template_ids
from verifier.watchlist.service import initialise_store

WATCHLIST = "bench"
TOP_K = 10
SEED = 20260


def _unit(count: int, dimension: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _return_freed_memory() -> None:
    """Hand freed heap back to the system, so the next allocation shows in the resident set."""
    gc.collect()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def _percentiles(samples: list[float]) -> str:
    p50, p99 = np.percentile(samples, [50, 99])
    return f"p50 {p50:8.2f} ms  p99 {p99:8.2f} ms"


def _photo_and_box(engine: FaceEngine, path: Path) -> tuple[bytes, tuple[float, float, float, float]]:
    photo = path.read_bytes()
    x1, y1, x2, y2 = (float(v) for v in engine.analyse(photo).face.box)
    return photo, (x1, y1, x2, y2)


def _wait_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=wl.DESCRIPTOR.services_by_name["Watchlist"].full_name)
    while health.Check(request, timeout=5).status != health_pb2.HealthCheckResponse.SERVING:
        time.sleep(0.05)


def through_grpc(gallery: int, requests: int) -> None:
    settings = get_settings().model_copy(deep=True)
    settings.models.intra_op_threads = 1
    settings.server.host, settings.server.port = "127.0.0.1", 0
    engine = FaceEngine.from_settings(settings)
    manifest = load_manifest(settings.models.manifest)
    pictures = fetch_asset(manifest.assets["face-recognition-photos"], settings.models.cache_dir)
    frame = capture_jpeg(*_photo_and_box(engine, pictures["obama3.jpg"]))
    chip, _ = chip_jpeg(*_photo_and_box(engine, pictures["obama.jpg"]))
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as data_dir:
        settings.data_dir = Path(data_dir)
        initialise_store(settings)
        running = start_server(settings, build_service(settings, engine))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                _wait_serving(channel)
                stub = wl_grpc.WatchlistStub(channel)
                stub.CreateWatchlist(wl.CreateWatchlistRequest(name=WATCHLIST), timeout=10)

                def enrol(subject_id: str, sample: pb.FaceSample) -> None:
                    subject = wl.Subject(watchlist=WATCHLIST, subject_id=subject_id, reason="benchmark",
                                         source_agency="benchmarks")
                    stub.EnrollSubject(wl.EnrollSubjectRequest(subject=subject, samples=[sample]), timeout=30)

                enrol("traveller", pb.FaceSample(image=pb.Image(data=chip)))
                for i, vector in enumerate(_unit(gallery, engine.embedder.dimension, rng)):
                    template = pb.Template(model_id=engine.model_id, version=1, dimension=len(vector),
                                           vector=vector.astype("<f4").tobytes())
                    enrol(f"S-{i:07d}", pb.FaceSample(template=template))
                warm = stub.Identify(wl.IdentifyRequest(probe=pb.FaceSample(image=pb.Image(data=frame))), timeout=30)
                print(f"Identify through gRPC, one client, gallery {warm.gallery_size} templates, "
                      f"threshold {warm.threshold:.3f} (FPIR {warm.false_positive_identification_rate:g})")
                template = pb_grpc.FaceVerifierStub(channel).ExtractTemplate(
                    pb.ExtractTemplateRequest(image=pb.Image(data=frame)), timeout=30
                ).template
                for label, probe in (("640x480 frame", pb.FaceSample(image=pb.Image(data=frame))),
                                     ("template", pb.FaceSample(template=template))):
                    request = wl.IdentifyRequest(probe=probe, watchlists=[WATCHLIST])
                    client, search, hits = [], [], 0
                    for _ in range(requests):
                        start = time.perf_counter()
                        answer = stub.Identify(request, timeout=30)
                        client.append((time.perf_counter() - start) * 1000.0)
                        search.append(next(t.milliseconds for t in answer.timings if t.stage == "search"))
                        hits += bool(answer.candidates) and answer.candidates[0].subject_id == "traveller"
                    print(f"  {label:14s} client {_percentiles(client)}   server search {_percentiles(search)}   "
                          f"rank-1 hit {hits}/{requests}")
        finally:
            running.stop(grace=1.0)


def index_alone(sizes: list[int], queries: int, dimension: int, threshold: float) -> None:
    faiss.omp_set_num_threads(1)
    process = psutil.Process()
    rng = np.random.default_rng(SEED)
    probes = _unit(queries, dimension, rng)
    print(f"Exact search alone, one core, {dimension}-D float32, k={TOP_K}, {queries} queries per size")
    for size in sizes:
        gc.collect()
        vectors = _unit(size, dimension, rng)
        ids = template_ids(np.arange(1, size + 1, dtype=np.int64), np.zeros(size, dtype=np.int64))
        _return_freed_memory()
        before = process.memory_info().rss
        raw = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        raw.add_with_ids(vectors, ids)
        grown = process.memory_info().rss - before
        raw_ms = []
        for probe in probes:
            start = time.perf_counter()
            raw.search(probe[None], TOP_K)
            raw_ms.append((time.perf_counter() - start) * 1000.0)
        del raw
        gc.collect()
        index = WatchlistIndex.build(dimension, {WATCHLIST: (ids, vectors)})
        del vectors
        ours_ms = []
        for probe in probes:
            start = time.perf_counter()
            index.search(probe, [WATCHLIST], TOP_K, threshold, time.time())
            ours_ms.append((time.perf_counter() - start) * 1000.0)
        del index
        print(f"  {size:>9,d} templates  FAISS {_percentiles(raw_ms)}   watch-list index {_percentiles(ours_ms)}   "
              f"index memory {grown / 2**20:7.1f} MiB (vectors alone {size * dimension * 4 / 2**20:7.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=2000, help="random templates beside the real person")
    parser.add_argument("--requests", type=int, default=200, help="Identify requests per probe kind")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="index sizes for the search alone")
    parser.add_argument("--queries", type=int, default=100, help="queries per index size")
    args = parser.parse_args()
    settings = get_settings()
    through_grpc(args.gallery, args.requests)
    dimension = FaceEngine.from_settings(settings).embedder.dimension
    index_alone([int(s) for s in args.sizes.split(",")], args.queries, dimension, settings.watchlist.threshold)


if __name__ == "__main__":
    main()
