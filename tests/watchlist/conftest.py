"""A watch-list service over a fresh store in a temporary data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.watchlist.samples import local_settings
from verifier.config import Settings
from verifier.pipeline import FaceEngine
from verifier.watchlist.service import WatchlistService


@pytest.fixture()
def service(settings: Settings, engine: FaceEngine, tmp_path: Path) -> Iterator[WatchlistService]:
    opened = WatchlistService.open(local_settings(settings, tmp_path), engine)
    opened.load()
    try:
        yield opened
    finally:
        opened.close()
