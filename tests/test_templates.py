from __future__ import annotations

import numpy as np
import pytest

from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.matching import Matcher, Threshold
from verifier.templates import TEMPLATE_VERSION, Template, TemplateSpec


@pytest.fixture(scope="module")
def template(engine: FaceEngine, photos: dict) -> Template:
    return engine.analyse(photos["obama.jpg"].read_bytes()).template


def test_round_trip_through_bytes(template: Template) -> None:
    again = Template.from_parts(template.model_id, template.version, template.dimension, template.to_bytes())
    assert again.model_id == template.model_id
    assert np.array_equal(again.vector, template.vector)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": TEMPLATE_VERSION + 1}, Reason.TEMPLATE_VERSION_UNSUPPORTED),
        ({"dimension": 7}, Reason.TEMPLATE_MALFORMED),
        ({"model_id": ""}, Reason.TEMPLATE_MALFORMED),
        ({"data": np.zeros(192, "<f4").tobytes()}, Reason.TEMPLATE_MALFORMED),
        ({"data": np.full(192, np.nan, "<f4").tobytes()}, Reason.TEMPLATE_MALFORMED),
    ],
)
def test_templates_we_could_not_have_made_are_refused(template: Template, change: dict, reason: Reason) -> None:
    parts = {"model_id": template.model_id, "version": template.version, "dimension": template.dimension,
             "data": template.to_bytes()} | change
    with pytest.raises(VerifierError) as caught:
        Template.from_parts(parts["model_id"], parts["version"], parts["dimension"], parts["data"])
    assert caught.value.reason is reason


def test_template_of_another_model_is_refused(template: Template) -> None:
    with pytest.raises(VerifierError) as caught:
        template.require(TemplateSpec("another-model:000000000000", template.dimension))
    assert caught.value.reason is Reason.TEMPLATE_MODEL_MISMATCH


def test_right_model_wrong_dimension_is_malformed_and_never_matches(engine: FaceEngine) -> None:
    """Two one-value 'templates' under the service's model id are unit vectors
    whose cosine is 1: without the dimension check they would 'match'."""
    spec = engine.template_spec
    tiny = Template.from_parts(spec.model_id, TEMPLATE_VERSION, 1, np.ones(1, "<f4").tobytes())
    matcher = Matcher(spec, Threshold(0.5, 1e-3, "test"))
    for a, b in ((tiny, tiny), (engine_template := Template(spec.model_id, _unit(spec.dimension)), tiny),
                 (tiny, engine_template)):
        with pytest.raises(VerifierError) as caught:
            matcher.decide(a, b)
        assert caught.value.reason is Reason.TEMPLATE_MALFORMED


def _unit(dimension: int) -> np.ndarray:
    vector = np.random.default_rng(1).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.mark.parametrize("model_id", ["x" * 129, "model id with spaces", "model\nid", "-leading"])
def test_model_ids_outside_the_id_rules_are_malformed(template: Template, model_id: str) -> None:
    with pytest.raises(VerifierError) as caught:
        Template.from_parts(model_id, template.version, template.dimension, template.to_bytes())
    assert caught.value.reason is Reason.TEMPLATE_MALFORMED


def test_a_huge_declared_dimension_is_refused_before_reading(template: Template) -> None:
    with pytest.raises(VerifierError) as caught:
        Template.from_parts(template.model_id, template.version, 10**9, template.to_bytes())
    assert caught.value.reason is Reason.TEMPLATE_MALFORMED
