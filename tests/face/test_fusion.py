from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import with_pack
from verifier.config import Settings
from verifier.errors import ModelPackError
from verifier.face.fusion import FusedEmbedder
from verifier.modelzoo.manifest import load_manifest
from verifier.pipeline import FaceEngine, Selection


@pytest.fixture(scope="module")
def fusion_engine(settings: Settings) -> FaceEngine:
    return FaceEngine.from_settings(with_pack(settings, "fusion"))


def test_fused_cosine_is_the_mean_of_the_parts(fusion_engine: FaceEngine, photos: dict[str, Path]) -> None:
    names = ("obama.jpg", "obama2.jpg", "biden.jpg")
    results = fusion_engine.analyse_batch([photos[n].read_bytes() for n in names], Selection.LARGEST)
    fused = np.stack([r.template.vector for r in results])
    embedder = fusion_engine.embedder
    assert isinstance(embedder, FusedEmbedder)
    assert fused.shape == (3, 192 + 512)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    split = np.cumsum([part.dimension for part in embedder.parts])[:-1]
    parts = [p * np.sqrt(len(embedder.parts)) for p in np.split(fused, split, axis=1)]
    mean_cosine = np.mean([p @ p.T for p in parts], axis=0)
    np.testing.assert_allclose(fused @ fused.T, mean_cosine, atol=1e-5)
    assert (fused @ fused.T)[0, 1] > (fused @ fused.T)[0, 2]


def test_fused_model_id_names_both_embedders(fusion_engine: FaceEngine) -> None:
    assert fusion_engine.model_id.startswith("mobilefacenet-192:")
    assert "+faceplugin-feature-512:" in fusion_engine.model_id


def test_fusion_is_refused_outside_the_embedder(settings: Settings, tmp_path: Path) -> None:
    text = settings.models.manifest.read_text().replace(
        'detector = "ultralight-rfb-320"', 'detector = ["ultralight-rfb-320", "ultralight-rfb-320"]', 1
    )
    broken = tmp_path / "manifest.toml"
    broken.write_text(text)
    with pytest.raises(ModelPackError, match="needs one model for detector"):
        load_manifest(broken)


def test_a_fused_pack_has_no_single_embedder(settings: Settings) -> None:
    manifest = load_manifest(settings.models.manifest)
    assert [spec.name for spec in manifest.members("fusion")["embedder"]] == [
        "mobilefacenet-192", "faceplugin-feature-512",
    ]
    with pytest.raises(ModelPackError, match="fuses several models"):
        manifest.pack("fusion")
