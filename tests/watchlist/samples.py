"""Test data for the watch-list tests: templates of the service's model.

Where only storage and search are under test, templates are seeded random unit
vectors: random 192-D unit vectors are nearly orthogonal, so each finds only
itself, and a test can name exactly which subject a probe must return.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.security.audit import AuditLog
from verifier.templates import Template
from verifier.watchlist.service import initialise_store


def unit_vectors(count: int, dimension: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def templates_of(engine: FaceEngine, count: int, seed: int) -> list[Template]:
    return [Template(engine.model_id, v) for v in unit_vectors(count, engine.embedder.dimension, seed)]


def local_settings(settings: Settings, data_dir: Path) -> Settings:
    """The settings with their data in ``data_dir``, where a watch-list store is
    created with its audit trail beside it (what `verifier watchlist init`
    leaves: a server refuses a store without its trail) unless one is there."""
    local = settings.model_copy(deep=True)
    local.data_dir = data_dir
    if not local.watchlist.store_file(data_dir).exists():
        initialise_store(local)
        if local.audit.enabled:
            AuditLog.for_settings(local).close()
    return local
