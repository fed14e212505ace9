from __future__ import annotations

import numpy as np
import pytest

from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.templates import TEMPLATE_VERSION, Template


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
        template.require_model("another-model:000000000000")
    assert caught.value.reason is Reason.TEMPLATE_MODEL_MISMATCH
