"""Settings that read an edited copy of the shipped manifest, to show how a pack
that is wrong in one place is refused."""

from __future__ import annotations

from pathlib import Path

from verifier.config import Settings


def with_edited_manifest(settings: Settings, tmp_path: Path, old: str, new: str) -> Settings:
    """``settings`` reading the shipped manifest with its first ``old`` replaced by ``new``."""
    text = settings.models.manifest.read_text()
    assert old in text, f"the shipped manifest no longer holds {old!r}"
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(text.replace(old, new, 1))
    local = settings.model_copy(deep=True)
    local.models.manifest = manifest
    return local
