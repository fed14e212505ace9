from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from verifier.config import Settings
from verifier.evaluation.cache import NO_PUBLISHED_LANDMARKS, SetTemplates, TemplateCache, cache_identity, embed_set
from verifier.evaluation.cli import LANDMARKS_FILE
from verifier.evaluation.datasets import LabeledSet, read_landmarks
from verifier.pipeline import FaceEngine, Selection


def test_a_second_run_reads_back_what_the_first_embedded(
    engine: FaceEngine, mini_folder_set: LabeledSet, tmp_path: Path
) -> None:
    first = embed_set(engine, mini_folder_set, tmp_path, Selection.CENTRE)
    assert first.embedded_now == len(mini_folder_set)
    again = embed_set(engine, mini_folder_set, tmp_path, Selection.CENTRE)
    assert again.embedded_now == 0
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.failures == first.failures
    assert list(first.failures.values()) == ["NO_FACE"]
    assert mini_folder_set.keys[next(iter(first.failures))].endswith("zz_background.png")
    np.testing.assert_allclose(np.linalg.norm(first.vectors[first.acquired], axis=1), 1.0, atol=1e-5)


def test_settings_that_change_a_template_change_the_cache_file(
    engine: FaceEngine, settings: Settings, tmp_path: Path
) -> None:
    plain = TemplateCache(tmp_path, cache_identity(engine, Selection.CENTRE, None))
    largest = TemplateCache(tmp_path, cache_identity(engine, Selection.LARGEST, None))
    mirrored = settings.model_copy(deep=True)
    mirrored.pipeline.embed_mirror = True
    other = FaceEngine(mirrored, engine.detector, engine.landmarks, engine.embedder)
    assert len({plain.path, largest.path, TemplateCache(tmp_path, cache_identity(other, Selection.CENTRE, None)).path}) == 3


def test_a_detector_fed_another_input_size_gets_its_own_cache_file(engine: FaceEngine, tmp_path: Path) -> None:
    """The same model file under another manifest contract gives other templates."""
    spec = engine.detector.spec
    wider = replace(spec, input=spec.input | {"width": spec.input["width"] + 64})
    other = FaceEngine(engine.settings, type(engine.detector)(wider, engine.detector.session, engine.detector.settings),
                       engine.landmarks, engine.embedder)
    assert (TemplateCache(tmp_path, cache_identity(engine, Selection.CENTRE, None)).path
            != TemplateCache(tmp_path, cache_identity(other, Selection.CENTRE, None)).path)


def test_published_landmarks_give_templates_close_to_detected_ones(
    engine: FaceEngine, settings: Settings, mini_lfw: Path, mini_lfw_set: LabeledSet,
    mini_lfw_templates: SetTemplates, tmp_path: Path,
) -> None:
    landmarks_file = mini_lfw / LANDMARKS_FILE
    landmarks = read_landmarks(landmarks_file)
    del landmarks[mini_lfw_set.keys[0]]
    published = embed_set(engine, mini_lfw_set, tmp_path, Selection.CENTRE, landmarks_file, landmarks)
    assert published.failures == {0: NO_PUBLISHED_LANDMARKS}
    agreement = np.einsum("ij,ij->i", published.vectors[1:], mini_lfw_templates.vectors[1:])
    assert np.median(agreement) > 0.85
