"""The peer's side of ``benchmarks.peer``: face_recognition (dlib) verifying image pairs.

Runs only under ``benchmarks/.peer-venv/bin/python`` (``make peer-venv``) and
imports nothing of ours, so the peer never becomes our dependency. Reads a JSON
job on stdin, ``{"pairs": [[path_a, path_b], ...], "warmup": k}``, and writes
one JSON object to stdout: per pair the face distance (null when either image
has no face) and the milliseconds from image bytes to distance.

Each image goes through the library's usual calls: ``face_locations`` (HOG,
upsampled once), the face nearest the image centre (the labelled face of an
LFW photo), ``face_encodings`` (5-point landmarks, one jitter), and the
Euclidean distance that ``compare_faces`` thresholds at 0.6.
"""

from __future__ import annotations

import io
import json
import sys
import time
from importlib import metadata
from pathlib import Path

import dlib
import face_recognition
import numpy as np


def _encoding(data: bytes) -> np.ndarray | None:
    image = face_recognition.load_image_file(io.BytesIO(data))
    boxes = face_recognition.face_locations(image)
    if not boxes:
        return None
    centre = np.array(image.shape[:2], dtype=np.float64) / 2
    # face_locations boxes are (top, right, bottom, left).
    box = min(boxes, key=lambda b: float(np.sum((np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]) - centre) ** 2)))
    return face_recognition.face_encodings(image, known_face_locations=[box])[0]


def verify(a: bytes, b: bytes) -> float | None:
    """Face distance of the two images, or None when either has no face."""
    first = _encoding(a)
    if first is None:
        return None
    second = _encoding(b)
    if second is None:
        return None
    return float(face_recognition.face_distance([first], second)[0])


def main() -> int:
    job = json.load(sys.stdin)
    pairs = [(Path(a).read_bytes(), Path(b).read_bytes()) for a, b in job["pairs"]]
    for a, b in pairs[: job["warmup"]]:
        verify(a, b)
    results = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for a, b in pairs:
        start = time.perf_counter()
        distance = verify(a, b)
        results.append({"distance": distance, "ms": (time.perf_counter() - start) * 1000.0})
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    versions = {
        # Distribution versions: face_recognition 1.3.0 still says 1.2.3 in its __version__.
        "dlib-bin": metadata.version("dlib-bin"),
        "face_recognition": metadata.version("face_recognition"),
        "face-recognition-models": metadata.version("face-recognition-models"),
        # How the prebuilt dlib was compiled: it decides the peer's speed as much as its code.
        "dlib_avx": str(dlib.USE_AVX_INSTRUCTIONS),
        "dlib_blas": str(dlib.DLIB_USE_BLAS),
    }
    json.dump({"results": results, "cpu_s": cpu, "wall_s": wall, "versions": versions}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
