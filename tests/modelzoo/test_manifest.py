from __future__ import annotations

from pathlib import Path

import pytest

from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.modelzoo.manifest import load_manifest


def test_default_pack_is_a_detector_with_landmarks_and_an_embedder(settings: Settings) -> None:
    pack = load_manifest(settings.models.manifest).pack("default")
    assert set(pack) == {"detector", "embedder"}
    assert pack["detector"].family == "retinaface"
    assert pack["embedder"].model_id.startswith("sface-128:")


def test_every_model_states_its_source_hashes_licence_and_contract(settings: Settings) -> None:
    for spec in load_manifest(settings.models.manifest).models.values():
        assert spec.source.registry and spec.source.package and spec.source.version and spec.source.path, spec.name
        assert len(spec.source.sha256) == 64 and len(spec.prepared_sha256) == 64, spec.name
        assert spec.licence and spec.input["width"] > 0 and spec.input["colour"] and spec.output, spec.name


def test_no_model_in_the_default_pack_needs_a_licence_accepted(settings: Settings) -> None:
    members = load_manifest(settings.models.manifest).members("default")
    assert not [spec.name for specs in members.values() for spec in specs if spec.requires_acceptance]


def test_a_pack_without_an_embedder_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "manifest.toml"
    broken.write_text('[packs.p]\ndetector = "d"\n')
    with pytest.raises(ModelPackError, match="names no embedder"):
        load_manifest(broken)


def test_unknown_pack_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(ModelPackError, match="not in"):
        load_manifest(settings.models.manifest).pack("no-such-pack")


def test_a_model_used_for_the_wrong_task_is_refused(settings: Settings, tmp_path: Path) -> None:
    text = settings.models.manifest.read_text().replace(
        'embedder = "sface-128"', 'embedder = "yunet-2023mar"', 1
    )
    broken = tmp_path / "manifest.toml"
    broken.write_text(text)
    with pytest.raises(ModelPackError, match="as embedder"):
        load_manifest(broken).pack("default")


def test_an_incomplete_entry_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "manifest.toml"
    broken.write_text('[models.x]\ntask = "detector"\n')
    with pytest.raises(ModelPackError, match="incomplete"):
        load_manifest(broken)
