"""Templates of an evaluation set, computed once and kept on disk.

Embedding a few thousand images takes minutes on a small CPU; every later
evaluation of the same images, models and settings reads them back in a second.
A cache file belongs to one combination of model ids and the settings that
change a template (its name is a digest of them); within it, entries are keyed
by the image bytes (and given landmarks), so a renamed or re-laid-out set still
hits and an edited image misses.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from verifier.config import Settings
from verifier.errors import VerifierError
from verifier.evaluation.datasets import LabeledSet
from verifier.imaging import ImageUse
from verifier.modelzoo.runtime import OPENVINO
from verifier.pipeline import PIPELINE_REVISION, FaceEngine, Selection
from verifier.templates import Template

# A failure recorded for an image the published landmarks do not cover.
NO_PUBLISHED_LANDMARKS = "NO_PUBLISHED_LANDMARKS"
# Batches embedded between two writes of the cache file: an interrupted run keeps most of its work.
_SAVE_EVERY_BATCHES = 16


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_identity(engine: FaceEngine, selection: Selection, landmarks_file: Path | None) -> dict[str, Any]:
    """Everything that changes a template: the models, their settings, how faces are chosen."""
    settings: Settings = engine.settings
    embedders = getattr(engine.embedder, "parts", (engine.embedder,))
    identity: dict[str, Any] = {
        "embedder": engine.model_id,
        # The manifest's contract, not only the file: the same model fed another
        # input size or normalisation gives other templates.
        "embedder_inputs": [part.spec.input for part in embedders],
        "pipeline_revision": PIPELINE_REVISION,
        # bf16 moves templates enough to move a threshold; ONNX Runtime and OpenVINO
        # f32 agree to 1e-5, but a cache is exact about what made it.
        "operating_point": engine.operating_point.key,
        "imaging": settings.imaging.model_dump(mode="json"),
        "pipeline": settings.pipeline.model_dump(mode="json"),
    }
    if engine.operating_point.runtime == OPENVINO:
        # Its per-shape graphs move bf16 embeddings by about 1e-4 in cosine.
        identity["openvino_static_shapes"] = settings.models.openvino_static_shapes > 0
    if landmarks_file is None:
        identity |= {
            "alignment": "detected",
            "detector": engine.detector.spec.model_id,
            "detector_input": engine.detector.spec.input,
            "landmarks": engine.landmarks.spec.model_id if engine.landmarks is not None else "detector",
            "landmarks_input": engine.landmarks.spec.input if engine.landmarks is not None else None,
            "detector_settings": settings.detector.model_dump(mode="json"),
            "selection": selection.value,
        }
    else:
        identity |= {"alignment": "published", "landmarks_file_sha256": _digest(landmarks_file.read_bytes())}
    return identity


class TemplateCache:
    """One ``.npz`` file of vectors and recorded failures, written atomically."""

    def __init__(self, directory: Path, identity: dict[str, Any]) -> None:
        text = json.dumps(identity, sort_keys=True)
        self.path = directory / f"{_digest(text.encode())[:20]}.npz"
        self.identity = text
        self.vectors: dict[str, np.ndarray] = {}
        self.failures: dict[str, str] = {}
        if self.path.exists():
            with np.load(self.path, allow_pickle=False) as stored:
                self.vectors = dict(zip(stored["keys"].tolist(), stored["vectors"]))
                self.failures = dict(zip(stored["failed_keys"].tolist(), stored["failed_reasons"].tolist()))

    def __contains__(self, key: str) -> bool:
        return key in self.vectors or key in self.failures

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        dimension = len(next(iter(self.vectors.values()))) if keys else 0
        staged = self.path.with_suffix(".tmp.npz")
        np.savez(
            staged,
            identity=np.array(self.identity),
            keys=np.array(keys, dtype=str),
            vectors=np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, dimension), np.float32),
            failed_keys=np.array(list(self.failures), dtype=str),
            failed_reasons=np.array(list(self.failures.values()), dtype=str),
        )
        os.replace(staged, self.path)


@dataclass(frozen=True)
class SetTemplates:
    """One row per image of the set; rows of images that failed to acquire are zero."""

    model_id: str
    vectors: np.ndarray
    acquired: np.ndarray
    failures: dict[int, str]
    embedded_now: int


def embed_set(
    engine: FaceEngine,
    labeled: LabeledSet,
    cache_dir: Path,
    selection: Selection = Selection.CENTRE,
    landmarks_file: Path | None = None,
    landmarks: dict[str, np.ndarray] | None = None,
    transform: Callable[[bytes, str], bytes] | None = None,
    use: ImageUse = ImageUse.LIVE,
) -> SetTemplates:
    """Templates for every image of the set, through the real pipeline (or from given
    landmarks), taking what the cache holds and adding what it lacks. ``transform``
    rewrites each image's bytes first (given its key): a derived capture condition;
    the cache keys on the rewritten bytes. ``use``: the limits and formats the
    images are taken under (a live capture unless said)."""
    identity = cache_identity(engine, selection, landmarks_file)
    if use is not ImageUse.LIVE:
        # Only then: the caches of live images, every one made so far, keep their names.
        identity["use"] = use.value
    cache = TemplateCache(cache_dir, identity)
    images = [labeled.path(i).read_bytes() for i in range(len(labeled))]
    if transform is not None:
        images = [transform(data, key) for data, key in zip(images, labeled.keys)]
    points = [landmarks.get(key) if landmarks is not None else None for key in labeled.keys]
    keys = [
        _digest(data if p is None else data + p.astype("<f4").tobytes()) for data, p in zip(images, points)
    ]
    for i, key in enumerate(keys):
        if landmarks is not None and points[i] is None:
            cache.failures[key] = NO_PUBLISHED_LANDMARKS
    todo = sorted({key: i for i, key in enumerate(keys) if key not in cache}.values())
    batch_size = engine.settings.evaluation.batch_size
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    for number, batch in enumerate(tqdm(batches, desc=f"embedding {labeled.name}", unit="batch", disable=not todo)):
        if landmarks is None:
            results = [
                r.template if not isinstance(r, VerifierError) else r
                for r in engine.analyse_batch([images[i] for i in batch], selection, use)
            ]
        else:
            results = engine.embed_with_landmarks([images[i] for i in batch], [points[i] for i in batch])
        for i, result in zip(batch, results):
            if isinstance(result, Template):
                cache.vectors[keys[i]] = result.vector
            else:
                cache.failures[keys[i]] = result.reason.value
        if (number + 1) % _SAVE_EVERY_BATCHES == 0:
            cache.save()
    if todo or not cache.path.exists():
        cache.save()
    dimension = engine.embedder.dimension
    vectors = np.zeros((len(labeled), dimension), dtype=np.float32)
    failures: dict[int, str] = {}
    for i, key in enumerate(keys):
        if key in cache.vectors:
            vectors[i] = cache.vectors[key]
        else:
            failures[i] = cache.failures[key]
    acquired = np.ones(len(labeled), dtype=bool)
    acquired[list(failures)] = False
    return SetTemplates(engine.model_id, vectors, acquired, failures, embedded_now=len(todo))
