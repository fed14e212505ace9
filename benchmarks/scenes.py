"""Gate-camera scenes generated from LFW dev: what the detector, the second
look and the gate must hold at the frame's own resolution.

    .venv/bin/python -m benchmarks.scenes [--scenes 200] [--streams 20] [--requests 60]

Each scene is a frame of 640x480, 1280x720, 1920x1080 or 3840x2160 with a
generated background (gradients, furniture-like blocks, stripes, blurred
noise), a traveller and none, one or two companions. Each person is an LFW
dev photo scaled so their eyes are a chosen number of pixels apart and
pasted as a head (a feathered ellipse about the face) at a random place;
the five published landmarks, moved with it, are the ground truth. The
traveller's eyes are drawn log-uniformly from 24 px to the largest the
frame holds, each companion's at 0.35-0.75 of the traveller's; companions
below the floor are generated too and reported apart.

Figures (all with the served pack and settings):

1. Detection recall per frame size for faces at or above the eye-distance
   floor (a ground-truth face is found when a detection's box holds its nose
   tip and its eyes fall inside the box), and how many were also searched
   (returned by the pipeline: eyes measured at or above the floor).
2. Each found face's score against its chip photo (another photo of the
   person) minus the score of the same face cut tightly out of the same
   frame (a square of 6 eye distances sent as its own image, losslessly): |delta|
   median, 99th percentile and maximum per frame size. Beside it, the tight
   crop's own spread: a second tight crop, its centre moved 0.15 eye
   distances, scored the same way (how far a score moves with nothing but
   where the face was cut).
3. Through a real server on loopback (gRPC, a watch-list of the
   companions): Screen with the traveller's chip; a watch-listed companion
   at or above the floor must give REFER WATCHLIST_HIT naming them. Two
   enrolments are measured: the very photo pasted into the scene (the
   pipeline's loss alone) and another photo of the person (the embedder's
   1:N miss rate included).
4. ScreenStream on 1920x1080 walk-through sequences at 10 frames a second:
   the traveller approaches from eyes ~10 px apart to ~80 px with a
   companion behind; the time from sending the first usable frame to the
   decision, and whether the companion was searched.
5. Screen p50 and p99 (one client) at 640x480 and at 1920x1080, with the
   server's CPU per call.

Writes ``benchmarks/results/scenes/<run>/scenes.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import grpc
import numpy as np
import psutil

from benchmarks.reporting import latency_summary, provenance, run_dir, write_json
from benchmarks.screen import stream_requests
from verifier.app import build_service, start_server
from verifier.config import Settings, get_settings
from verifier.errors import VerifierError
from verifier.imaging import ImageUse
from verifier.pipeline import FaceEngine, FaceResult, Selection
from verifier.templates import Template
from verifier.v1 import gate_pb2 as gpb
from verifier.v1 import gate_pb2_grpc as gpb_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.watchlist.store import SubjectEntry, WatchlistStore

SEED = 2160
FRAME_SIZES = ((640, 480), (1280, 720), (1920, 1080), (3840, 2160))
JPEG_QUALITY = 90
# The head pasted about each face: an ellipse this many eye distances across
# and down, feathered over a quarter of an eye distance.
HEAD_AXES = (1.9, 2.6)
# A tight crop: a square this many eye distances wide about the face.
TIGHT_SPAN = 6.0
# The tight crop's own spread: the score of the face in a second tight crop,
# its centre moved this many eye distances in a seeded direction, minus the
# first's. No frame is needed for it, so it is how far a face's score moves
# with nothing but where its crop was cut: the floor under the frame's deltas.
TIGHT_SHIFT = 0.15
WATCHLIST = "scenes"
# A walk-through companion's eye distance as a share of the traveller's: behind
# them, yet under gate.second_person_ratio (not in the gate with them).
COMPANION_SHARE = 0.55
DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-dev"


@dataclass(frozen=True)
class Photo:
    """One LFW photo with its published five points (left eye, right eye, nose, mouth corners)."""

    key: str
    person: str
    bgr: np.ndarray
    points: np.ndarray

    @property
    def eyes(self) -> float:
        return float(np.linalg.norm(self.points[0] - self.points[1]))


@dataclass(frozen=True)
class Placed:
    """A face in a generated frame: its photo, role, and ground-truth points in frame pixels."""

    photo: Photo
    role: str
    points: np.ndarray

    @property
    def eyes(self) -> float:
        return float(np.linalg.norm(self.points[0] - self.points[1]))


def load_photos(dataset: Path) -> dict[str, list[Photo]]:
    """LFW dev photos with landmarks, by person, for the people with two or more."""
    points: dict[str, np.ndarray] = {}
    for line in (dataset / "landmarks-5pt.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) == 11:
            points[fields[0]] = np.array(fields[1:], dtype=np.float32).reshape(5, 2)
    people: dict[str, list[str]] = {}
    for key in sorted(points):
        people.setdefault(key.split("/")[0], []).append(key)
    photos = {}
    for person, keys in people.items():
        if len(keys) >= 2:
            photos[person] = [Photo(key, person, cv2.imread(str(dataset / "images" / key), cv2.IMREAD_COLOR),
                                    points[key]) for key in keys]
    return photos


def background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A generated backdrop: one of a lit wall, furniture-like blocks, tiles or
    stripes, or blurred colour noise, with sensor noise over it."""
    width, height = size
    small = (max(8, width // 8), max(8, height // 8))
    kind = int(rng.integers(4))
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    ramp = np.linspace(0, 1, small[1], dtype=np.float32)[:, None, None]
    base = (top * (1 - ramp) + bottom * ramp) * np.ones((1, small[0], 1), dtype=np.float32)
    if kind == 1:
        for _ in range(int(rng.integers(3, 9))):
            x, y = int(rng.integers(small[0])), int(rng.integers(small[1]))
            w, h = int(rng.integers(small[0] // 10, small[0] // 2)), int(rng.integers(small[1] // 10, small[1] // 2))
            base[y:y + h, x:x + w] = rng.uniform(20, 235, 3)
    elif kind == 2:
        period = int(rng.integers(4, 24))
        stripes = ((np.arange(small[0]) // period) % 2).astype(np.float32)[None, :, None]
        base = base * (0.75 + 0.25 * stripes)
    elif kind == 3:
        base = cv2.GaussianBlur(rng.uniform(30, 220, (small[1], small[0], 3)).astype(np.float32), (0, 0), 3)
    frame = cv2.resize(base, size, interpolation=cv2.INTER_LINEAR)
    frame += rng.normal(0, 4, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, photo: Photo, eyes: float, centre: tuple[float, float]) -> np.ndarray:
    """Paste ``photo`` into ``frame`` (in place) as a head whose eyes are ``eyes``
    px apart, the face's centre at ``centre``; returns its five points in the frame."""
    scale = eyes / photo.eyes
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    head = cv2.resize(photo.bgr, None, fx=scale, fy=scale, interpolation=interpolation)
    fx, fy = head.shape[1] / photo.bgr.shape[1], head.shape[0] / photo.bgr.shape[0]
    points = photo.points * np.array([fx, fy], dtype=np.float32)
    face_centre = points.mean(axis=0)
    ox, oy = int(round(centre[0] - face_centre[0])), int(round(centre[1] - face_centre[1]))
    mask = np.zeros(head.shape[:2], dtype=np.float32)
    axes = (max(1, int(HEAD_AXES[0] * eyes / 2 * 2)), max(1, int(HEAD_AXES[1] * eyes / 2 * 2)))
    cv2.ellipse(mask, (int(face_centre[0]), int(face_centre[1] - 0.3 * eyes)), axes, 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, eyes / 4))[..., None]
    h, w = frame.shape[:2]
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(w, ox + head.shape[1]), min(h, oy + head.shape[0])
    if x1 > x0 and y1 > y0:
        part = mask[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = (region * (1 - part) + head[y0 - oy:y1 - oy, x0 - ox:x1 - ox] * part).astype(np.uint8)
    return points + np.array([ox, oy], dtype=np.float32)


def _free_spot(rng: np.random.Generator, size: tuple[int, int], eyes: float,
               taken: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """A centre for a head of ``eyes`` inside the frame, clear of the heads placed."""
    width, height = size
    half_w, half_h = 2.2 * eyes, 3.0 * eyes
    if 2 * half_w >= width or 2 * half_h >= height:
        return None
    for _ in range(50):
        x, y = rng.uniform(half_w, width - half_w), rng.uniform(half_h, height - half_h)
        if all(abs(x - tx) > 2.2 * (eyes + te) and abs(y - ty) > 0.5 * (eyes + te) or
               abs(y - ty) > 3.0 * (eyes + te) for tx, ty, te in taken):
            return x, y
    return None


def scene(rng: np.random.Generator, size: tuple[int, int], people: list[list[Photo]], traveller_eyes: float,
          companion_eyes: list[float]) -> tuple[np.ndarray, list[Placed]]:
    """A frame of ``size`` with the traveller (``people[0]``'s first photo) and
    companions (the first photo of each next person) at the given eye distances."""
    frame = background(rng, size)
    placed: list[Placed] = []
    taken: list[tuple[float, float, float]] = []
    for index, eyes in enumerate([traveller_eyes, *companion_eyes]):
        spot = _free_spot(rng, size, eyes, taken)
        if spot is None:
            continue
        taken.append((*spot, eyes))
        photo = people[index][0]
        placed.append(Placed(photo, "traveller" if index == 0 else "companion", paste(frame, photo, eyes, spot)))
    return frame, placed


def jpeg(bgr: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()


def _largest_eyes(size: tuple[int, int]) -> float:
    """The largest traveller a frame of ``size`` holds with room about the head."""
    return min(size[0] / 4.8, size[1] / 6.5, 250.0)


def _matched(truth: Placed, faces: list[FaceResult]) -> FaceResult | None:
    """The face whose box holds the ground truth's nose tip and eyes, nearest first."""
    nose = truth.points[2]
    best, distance = None, np.inf
    for face in faces:
        x1, y1, x2, y2 = face.face.box
        inside = all(x1 <= p[0] <= x2 and y1 <= p[1] <= y2 for p in truth.points[:3])
        gap = float(np.linalg.norm(face.face.landmarks[2] - nose))
        if inside and gap < distance:
            best, distance = face, gap
    return best


_TEMPLATES: dict[str, Template] = {}


def _template(engine: FaceEngine, photo: Photo) -> Template:
    """A photo's template as a document portrait (LFW's labelled face is the centre one), kept."""
    if photo.key not in _TEMPLATES:
        _TEMPLATES[photo.key] = engine.analyse(jpeg(photo.bgr), Selection.CENTRE, ImageUse.DOCUMENT).template
    return _TEMPLATES[photo.key]


def _tight(frame: np.ndarray, truth: Placed, span: float) -> bytes:
    """The face cut out of the decoded frame, sent losslessly (PNG): the same pixels the
    frame's face has. A JPEG of the cut would add a second compression, on another 8x8
    grid, that the face in the frame never went through (it moved medians by about 0.002)."""
    centre = truth.points.mean(axis=0)
    half = span * truth.eyes / 2
    h, w = frame.shape[:2]
    x0, y0 = int(max(0, centre[0] - half)), int(max(0, centre[1] - half))
    x1, y1 = int(min(w, centre[0] + half)), int(min(h, centre[1] + half))
    return cv2.imencode(".png", frame[y0:y1, x0:x1])[1].tobytes()


@dataclass
class SceneCase:
    size: tuple[int, int]
    frame: bytes
    placed: list[Placed]
    people: list[list[Photo]]


def cases(photos: dict[str, list[Photo]], per_size: int, seed: int = SEED) -> list[SceneCase]:
    """``per_size`` scenes for each frame size, seeded; a third alone, a third with
    one companion, a third with two."""
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    generated = []
    for size in FRAME_SIZES:
        for k in range(per_size):
            chosen = [photos[names[i]] for i in rng.choice(len(names), 3, replace=False)]
            traveller = float(np.exp(rng.uniform(np.log(24.0), np.log(_largest_eyes(size)))))
            companions = [traveller * float(rng.uniform(0.35, 0.75)) for _ in range(k % 3)]
            frame, placed = scene(rng, size, chosen, traveller, companions)
            generated.append(SceneCase(size, jpeg(frame), placed, chosen))
    return generated


def _detection(engine: FaceEngine, generated: list[SceneCase], floor: float, span: float) -> dict[str, object]:
    """Recall and score deltas per frame size, through the engine (no transport)."""
    rows: dict[str, dict[str, object]] = {}
    rng = np.random.default_rng(SEED)
    for size in FRAME_SIZES:
        at_floor = found = searched = below = below_found = 0
        deltas: list[float] = []
        spread: list[float] = []
        worst: list[tuple[float, str, float]] = []
        misses: list[list[object]] = []
        for case in (c for c in generated if c.size == size):
            frame = cv2.imdecode(np.frombuffer(case.frame, np.uint8), cv2.IMREAD_COLOR)
            try:
                faces = engine.analyse_all(case.frame).faces
            except VerifierError:
                faces = []
            boxes = engine.detector.detect_batch([frame])[0]
            for truth, person in zip(case.placed, case.people):
                detected = any(b.box[0] <= truth.points[2][0] <= b.box[2] and b.box[1] <= truth.points[2][1] <= b.box[3]
                               for b in boxes)
                face = _matched(truth, faces)
                if truth.eyes < floor:
                    below += 1
                    below_found += detected
                    continue
                at_floor += 1
                found += detected
                searched += face is not None
                if not detected or face is None:
                    misses.append([truth.photo.key, round(truth.eyes, 1), bool(detected), face is not None])
                    continue
                angle = rng.uniform(0.0, 2 * np.pi)
                moved = replace(truth, points=truth.points + np.float32(TIGHT_SHIFT * truth.eyes)
                                * np.array([np.cos(angle), np.sin(angle)], np.float32))
                try:  # a chip photo or tight crop the pipeline refuses (at the floor, say) has no score to compare
                    chip = _template(engine, person[1]).vector
                    tight = engine.analyse(_tight(frame, truth, span), Selection.CENTRE).template.vector
                    other = engine.analyse(_tight(frame, moved, span), Selection.CENTRE).template.vector
                except VerifierError:
                    continue
                deltas.append(float(face.template.vector @ chip) - float(tight @ chip))
                spread.append(float(other @ chip) - float(tight @ chip))
                worst.append((abs(deltas[-1]), truth.photo.key, round(truth.eyes, 1)))
        absolute = np.abs(np.array(deltas)) if deltas else np.zeros(1)
        shifted = np.abs(np.array(spread)) if spread else np.zeros(1)
        rows[f"{size[0]}x{size[1]}"] = {
            "faces_at_or_above_floor": at_floor, "detected": found, "searched": searched,
            "recall": found / max(at_floor, 1), "searched_share": searched / max(at_floor, 1),
            "below_floor": below, "below_floor_detected": below_found,
            "score_delta_abs_median": float(np.median(absolute)), "score_delta_abs_p99": float(np.quantile(absolute, 0.99)),
            "score_delta_abs_max": float(absolute.max()), "score_deltas": len(deltas),
            "score_delta_above_0_03": int((absolute > 0.03).sum()),
            "tight_shift_delta_abs_median": float(np.median(shifted)),
            "tight_shift_delta_abs_p99": float(np.quantile(shifted, 0.99)),
            "tight_shift_delta_abs_max": float(shifted.max()), "tight_shift_above_0_03": int((shifted > 0.03).sum()),
            "misses": misses,
            "largest_deltas": sorted(worst, reverse=True)[:5],
        }
    print("| frame | faces >= floor | detected (recall) | searched | below floor (detected) | "
          "median abs delta | p99 | max | above 0.03 | tight crop shifted: median | p99 | max | above 0.03 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['faces_at_or_above_floor']} | {row['detected']} ({100 * row['recall']:.2f} %) | "
              f"{row['searched']} ({100 * row['searched_share']:.2f} %) | {row['below_floor']} "
              f"({row['below_floor_detected']}) | {row['score_delta_abs_median']:.4f} | "
              f"{row['score_delta_abs_p99']:.4f} | {row['score_delta_abs_max']:.4f} | {row['score_delta_above_0_03']} | "
              f"{row['tight_shift_delta_abs_median']:.4f} | {row['tight_shift_delta_abs_p99']:.4f} | "
              f"{row['tight_shift_delta_abs_max']:.4f} | {row['tight_shift_above_0_03']} |")
    return rows


def _serve(settings: Settings, engine: FaceEngine, enrolled: dict[str, list[tuple[str, Template]]],
           data_dir: Path) -> object:
    """A server on loopback over a fresh store holding ``enrolled`` (list -> subjects)."""
    settings.data_dir = data_dir
    (data_dir / "watchlist").mkdir(mode=0o700)
    store = WatchlistStore.create(settings.watchlist.store_file(data_dir), settings.watchlist.busy_timeout_seconds)
    for name, subjects in enrolled.items():
        store.create_watchlist(name, "scene benchmark")
        for subject_id, template in subjects:
            store.add_subject(SubjectEntry(name, subject_id, "benchmark", "benchmarks", "", None), [template])
    store.close()
    return start_server(settings, build_service(settings, engine))


def _wait_serving(channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    ask = health_pb2.HealthCheckRequest(service="verifier.v1.Watchlist")
    deadline = time.monotonic() + 120
    while health.Check(ask, timeout=60).status != health_pb2.HealthCheckResponse.SERVING:
        if time.monotonic() > deadline:
            raise SystemExit("the watch-list never became SERVING")
        time.sleep(0.1)


def _screen(gate: gpb_grpc.GateStub, frame: bytes, chip: bytes) -> gpb.ScreenResponse:
    return gate.Screen(gpb.ScreenRequest(frames=[pb.Image(data=frame)], reference=pb.FaceSample(image=pb.Image(data=chip)),
                                         gate_id="scenes", transaction_id=uuid.uuid4().hex), timeout=120)


def _hits(gate: gpb_grpc.GateStub, generated: list[SceneCase], floor: float) -> dict[str, object]:
    """Screen of every scene with companions; is each companion at or above the floor named?"""
    rows: dict[str, dict[str, object]] = {}
    for size in FRAME_SIZES:
        named = {"same": 0, "other": 0}
        referred = companions = 0
        missed: list[list[object]] = []
        for case in (c for c in generated if c.size == size and len(c.placed) > 1):
            answer = _screen(gate, case.frame, jpeg(case.people[0][1].bgr))
            for truth in case.placed[1:]:
                if truth.eyes < floor:
                    continue
                companions += 1
                found = {hit.watchlist for hit in answer.hits if hit.subject_id == truth.photo.person}
                named["same"] += "same" in found
                named["other"] += "other" in found
                got = answer.decision == gpb.REFER and "WATCHLIST_HIT" in answer.reasons and "same" in found
                referred += got
                if not got:
                    missed.append([truth.photo.key, round(truth.eyes, 1), gpb.GateDecision.Name(answer.decision),
                                   list(answer.reasons), sorted(found)])
        rows[f"{size[0]}x{size[1]}"] = {
            "companions_at_or_above_floor": companions, "referred_watchlist_hit_same_photo": referred,
            "named_same_photo": named["same"], "named_other_photo": named["other"], "missed": missed,
        }
    print("| frame | watch-listed companions >= floor | REFER WATCHLIST_HIT naming them (enrolled: the same photo) "
          "| named (enrolled: another photo) |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        n = max(int(row["companions_at_or_above_floor"]), 1)  # type: ignore[call-overload]
        print(f"| {name} | {row['companions_at_or_above_floor']} | {row['referred_watchlist_hit_same_photo']} "
              f"({100 * int(row['referred_watchlist_hit_same_photo']) / n:.2f} %) | {row['named_other_photo']} "  # type: ignore[call-overload]
              f"({100 * int(row['named_other_photo']) / n:.2f} %) |")  # type: ignore[call-overload]
    return rows


def walk_through(rng: np.random.Generator, traveller: list[Photo], companion: Photo,
                 frames: int = 12) -> list[bytes]:
    """1920x1080 frames at 10 a second: the traveller approaches from eyes 10 px
    apart to 80, two of their photos alternating (the face changes
    non-rigidly); the companion follows behind, a little over half their size."""
    size = (1920, 1080)
    backdrop = background(rng, size)
    sequence = []
    for step in range(frames):
        eyes = 10.0 * 8.0 ** (step / (frames - 1))
        frame = backdrop.copy()
        paste(frame, companion, eyes * COMPANION_SHARE, (1300 - 2 * step, 420 + 0.5 * eyes))
        paste(frame, traveller[step % 2], eyes, (900 + 3 * step, 430 + 1.2 * eyes))
        sequence.append(jpeg(frame))
    return sequence


def _streams(gate: gpb_grpc.GateStub, engine: FaceEngine, settings: Settings, photos: dict[str, list[Photo]],
             count: int, listed: set[str]) -> dict[str, object]:
    """Walk-through streams: time from the first usable frame to the decision,
    the decision, and whether the companion was among the faces searched."""
    from verifier.face.quality import QualityAssessor

    assessor = QualityAssessor.from_settings(settings, engine.embedder.utility_members)
    rng = np.random.default_rng(SEED + 1)
    travellers = [p for p in sorted(photos) if len(photos[p]) >= 3]
    companions = sorted(listed)
    to_decision: list[float] = []
    outcomes: list[list[object]] = []
    for k in range(count):
        person = photos[travellers[int(rng.integers(len(travellers)))]]
        companion = photos[companions[k % len(companions)]][0]
        frames = walk_through(rng, person[:2], companion)
        usable = None
        for index, frame in enumerate(frames):
            try:
                if not assessor.assess(engine.analyse_all(frame).faces[0]).codes:
                    usable = index
                    break
            except VerifierError:
                continue
        if usable is None:
            outcomes.append([person[0].key, "no usable frame"])
            continue
        sent: list[float] = []
        for answer in gate.ScreenStream(stream_requests(jpeg(person[2].bgr), frames, sent, "scenes"), timeout=60):
            if answer.WhichOneof("item") == "decision":
                decision = answer.decision
                to_decision.append((time.perf_counter() - sent[usable]) * 1000.0)
                outcomes.append([person[0].key, gpb.GateDecision.Name(decision.decision), list(decision.reasons),
                                 usable, decision.frame_index, len(decision.faces),
                                 any(hit.subject_id == companion.person for hit in decision.hits)])
    summary = latency_summary(to_decision)
    searched = sum(1 for o in outcomes if len(o) > 5 and int(o[5]) >= 2)  # type: ignore[call-overload]
    named = sum(1 for o in outcomes if len(o) > 6 and o[6])
    print(f"ScreenStream 1920x1080 walk-through: {len(to_decision)} decided; first usable frame to decision p50 "
          f"{summary['p50']:.0f} ms p99 {summary['p99']:.0f} ms; companion searched in {searched}, "
          f"named (watch-listed) in {named}")
    return {"usable_to_decision_ms": summary, "companion_searched": searched, "companion_named": named,
            "outcomes": outcomes}


def _timings(gate: gpb_grpc.GateStub, photos: dict[str, list[Photo]], requests: int) -> dict[str, object]:
    """Screen one after another at 640x480 and 1920x1080: p50, p99 and CPU per call."""
    rng = np.random.default_rng(SEED + 2)
    person = photos[sorted(p for p in photos if len(photos[p]) >= 2)[0]]
    chip = jpeg(person[1].bgr)
    results = {}
    process = psutil.Process()
    for size, eyes in (((640, 480), 60.0), ((1920, 1080), 80.0)):
        frame = background(rng, size)
        paste(frame, person[0], eyes, (size[0] / 2, size[1] / 2))
        data = jpeg(frame)
        _screen(gate, data, chip)
        samples = []
        cpu = sum(process.cpu_times()[:2])
        for _ in range(requests):
            start = time.perf_counter()
            _screen(gate, data, chip)
            samples.append((time.perf_counter() - start) * 1000.0)
        cpu = (sum(process.cpu_times()[:2]) - cpu) / requests
        summary = latency_summary(samples)
        results[f"{size[0]}x{size[1]}"] = {"latency_ms": summary, "cpu_ms_per_call": 1000 * cpu}
        print(f"Screen {size[0]}x{size[1]} (eyes {eyes:.0f} px), one client: p50 {summary['p50']:.1f} ms "
              f"p99 {summary['p99']:.1f} ms, CPU {1000 * cpu:.1f} ms a call")
    ratio = results["1920x1080"]["latency_ms"]["p50"] / results["640x480"]["latency_ms"]["p50"]  # type: ignore[index]
    print(f"1080p p50 / 640x480 p50: {ratio:.2f}")
    results["p50_ratio_1080p_to_640x480"] = ratio
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--scenes", type=int, default=200, help="scenes per frame size")
    parser.add_argument("--streams", type=int, default=20, help="walk-through sequences")
    parser.add_argument("--requests", type=int, default=60, help="Screen calls per frame size for the timings")
    parser.add_argument("--tight-span", type=float, default=TIGHT_SPAN,
                        help="side of the tight crop the frame's score is compared with, in eye distances")
    parser.add_argument("--skip", nargs="*", default=[], choices=["detection", "hits", "streams", "timings"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = get_settings().model_copy(deep=True)
    settings.server.host, settings.server.port = "127.0.0.1", 0
    settings.admission.caller_key = "connection"
    engine = FaceEngine.from_settings(settings)
    floor = settings.detector.min_eye_distance_px
    photos = load_photos(args.dataset)
    generated = cases(photos, args.scenes)
    report: dict[str, object] = {"provenance": provenance(), "dataset": str(args.dataset), "scenes_per_size": args.scenes,
                                 "floor_eye_px": floor, "tight_span_eyes": args.tight_span}
    if "detection" not in args.skip:
        report["detection"] = _detection(engine, generated, floor, args.tight_span)
    companions = {p.photo.person: photos[p.photo.person] for c in generated for p in c.placed[1:]}
    enrolled = {"same": [(person, _template(engine, shots[0])) for person, shots in companions.items()],
                "other": [(person, _template(engine, shots[1])) for person, shots in companions.items()]}
    with tempfile.TemporaryDirectory() as data_dir:
        running = _serve(settings, engine, enrolled, Path(data_dir))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:  # type: ignore[attr-defined]
                _wait_serving(channel)
                gate = gpb_grpc.GateStub(channel)
                if "hits" not in args.skip:
                    report["watchlist_hits"] = _hits(gate, generated, floor)
                if "streams" not in args.skip:
                    report["streams"] = _streams(gate, engine, settings, photos, args.streams, set(companions))
                if "timings" not in args.skip:
                    report["screen"] = _timings(gate, photos, args.requests)
        finally:
            running.stop(grace=1.0)  # type: ignore[attr-defined]
    out = run_dir(args.out) / "scenes.json"
    write_json(out, report)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
