"""Packs load as the manifest says: a restricted licence loads only when accepted,
and every model's licence is logged when a pack loads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.face.manifests import with_edited_manifest
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.modelzoo.manifest import load_manifest
from verifier.pipeline import FaceEngine, Selection

RESEARCH_TOKEN = "insightface-non-commercial"


def _pack(settings: Settings, pack: str, accept: tuple[str, ...] = ()) -> Settings:
    local = settings.model_copy(deep=True)
    local.models.pack = pack
    local.models.accept_licences = accept
    return local


def test_the_research_pack_is_refused_unless_its_licence_is_accepted(settings: Settings) -> None:
    with pytest.raises(ModelPackError, match=f"non-commercial.*{RESEARCH_TOKEN}"):
        FaceEngine.from_settings(_pack(settings, "research", ("some-other-licence",)))


def test_an_accepted_research_pack_loads_logs_its_licence_and_matches(
    settings: Settings, photos: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="verifier.pipeline"):
        engine = FaceEngine.from_settings(_pack(settings, "research", (RESEARCH_TOKEN,)))
    assert any("w600k-mbf" in r.message and "non-commercial research" in r.message for r in caplog.records)
    results = engine.analyse_batch([photos[n].read_bytes() for n in ("obama.jpg", "obama2.jpg", "biden.jpg")],
                                   Selection.LARGEST)
    same = float(results[0].template.vector @ results[1].template.vector)
    other = float(results[0].template.vector @ results[2].template.vector)
    assert engine.template_spec.dimension == 512 and same > 0.5 > other


@pytest.mark.parametrize("pack", ["default", "fast-legacy"])
def test_every_shipped_pack_loads_without_accepting_anything(settings: Settings, pack: str) -> None:
    engine = FaceEngine.from_settings(_pack(settings, pack))
    assert engine.template_spec == load_manifest(settings.models.manifest).template_spec(pack)


def test_a_detector_of_an_unknown_family_is_refused(settings: Settings, tmp_path: Path) -> None:
    local = with_edited_manifest(settings, tmp_path, 'family = "retinaface"', 'family = "no-such-family"')
    with pytest.raises(ModelPackError, match="family 'no-such-family'"):
        FaceEngine.from_settings(local)
