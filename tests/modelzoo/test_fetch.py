"""Fetching through the registry client: hashes are checked, mismatches refused, the cache reused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.modelzoo.fetch import fetch_model, model_path, sha256_of
from verifier.modelzoo.manifest import load_manifest


def test_cached_models_verify_without_fetching(settings: Settings) -> None:
    for spec in load_manifest(settings.models.manifest).models.values():
        result = fetch_model(spec, settings.models.cache_dir)
        assert not result.fetched
        assert sha256_of(result.path) == spec.prepared_sha256


@pytest.mark.slow
def test_a_source_hash_mismatch_is_refused_and_nothing_cached(settings: Settings, tmp_path: Path) -> None:
    spec = load_manifest(settings.models.manifest).models["faceplugin-landmark-68"]
    tampered = dataclasses.replace(spec, source=dataclasses.replace(spec.source, sha256="0" * 64))
    with pytest.raises(ModelPackError, match="REFUSED"):
        fetch_model(tampered, tmp_path)
    assert not model_path(tmp_path, spec).exists()


@pytest.mark.slow
def test_a_prepared_hash_mismatch_is_refused(settings: Settings, tmp_path: Path) -> None:
    spec = load_manifest(settings.models.manifest).models["faceplugin-landmark-68"]
    with pytest.raises(ModelPackError, match="REFUSED: prepared"):
        fetch_model(dataclasses.replace(spec, prepared_sha256="f" * 64), tmp_path)
    assert not model_path(tmp_path, spec).exists()


def test_an_altered_cached_file_is_not_served(settings: Settings, tmp_path: Path) -> None:
    from verifier.pipeline import FaceEngine

    local = settings.model_copy(deep=True)
    local.models.cache_dir = tmp_path
    for spec in load_manifest(settings.models.manifest).models.values():
        target = model_path(tmp_path, spec)
        target.write_bytes(model_path(settings.models.cache_dir, spec).read_bytes())
    embedder = load_manifest(settings.models.manifest).pack(settings.models.pack)["embedder"]
    with model_path(tmp_path, embedder).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelPackError, match="does not match"):
        FaceEngine.from_settings(local)
