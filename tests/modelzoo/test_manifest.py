from __future__ import annotations

from pathlib import Path

import pytest

from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.modelzoo.manifest import load_manifest


def test_default_pack_has_every_task(settings: Settings) -> None:
    pack = load_manifest(settings.models.manifest).pack("default")
    assert set(pack) == {"detector", "landmarks", "embedder", "liveness"}
    for spec in pack.values():
        assert len(spec.source.sha256) == 64 and len(spec.prepared_sha256) == 64
        assert spec.licence and spec.input["width"] > 0
    assert pack["embedder"].model_id.startswith("mobilefacenet-192:")


def test_unknown_pack_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(ModelPackError, match="not in"):
        load_manifest(settings.models.manifest).pack("no-such-pack")


def test_a_model_used_for_the_wrong_task_is_refused(settings: Settings, tmp_path: Path) -> None:
    text = settings.models.manifest.read_text().replace(
        'embedder = "mobilefacenet-192"', 'embedder = "ultralight-rfb-320"', 1
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
