from __future__ import annotations

from pathlib import Path

import pytest

from verifier.app import build_service
from verifier.config import Settings
from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.templates import Template


@pytest.fixture(scope="module")
def service(settings: Settings, engine: FaceEngine):  # noqa: ANN201
    return build_service(settings, engine)


def test_verify_two_photos_of_one_person(service, photos: dict[str, Path]) -> None:  # noqa: ANN001
    outcome = service.verify(photos["obama3.jpg"].read_bytes(), photos["obama.jpg"].read_bytes())
    assert outcome.decision.match
    assert outcome.reference is not None and outcome.reference.faces_detected == 1
    stages = ("decode", "detect", "landmarks", "align", "embed")
    expected = {f"{side}.{stage}" for side in ("probe", "reference") for stage in stages} | {"compare"}
    assert set(outcome.timings_ms) == expected


def test_verify_two_people(service, photos: dict[str, Path]) -> None:  # noqa: ANN001
    outcome = service.verify(photos["obama.jpg"].read_bytes(), photos["biden.jpg"].read_bytes())
    assert not outcome.decision.match
    assert outcome.decision.score < outcome.decision.threshold.value


def test_verify_against_a_template_gives_the_same_score(service, photos: dict[str, Path]) -> None:  # noqa: ANN001
    chip = service.extract(photos["obama2.jpg"].read_bytes()).template
    with_image = service.verify(photos["obama.jpg"].read_bytes(), photos["obama2.jpg"].read_bytes())
    with_template = service.verify(photos["obama.jpg"].read_bytes(), chip)
    assert with_template.reference is None
    assert not any(stage.startswith("reference.") for stage in with_template.timings_ms)
    assert with_template.decision.score == pytest.approx(with_image.decision.score, abs=1e-5)


def test_errors_name_the_side_that_failed(service, photos: dict[str, Path]) -> None:  # noqa: ANN001
    with pytest.raises(VerifierError) as caught:
        service.verify(photos["obama.jpg"].read_bytes(), b"not an image")
    assert caught.value.reason is Reason.IMAGE_UNDECODABLE
    assert caught.value.details["side"] == "reference"


def test_template_of_another_model_is_refused(service, photos: dict[str, Path]) -> None:  # noqa: ANN001
    chip = service.extract(photos["obama2.jpg"].read_bytes()).template
    foreign = Template(model_id="faceplugin-feature-512:84fd65a16b57", vector=chip.vector)
    with pytest.raises(VerifierError) as caught:
        service.verify(photos["obama.jpg"].read_bytes(), foreign)
    assert caught.value.reason is Reason.TEMPLATE_MODEL_MISMATCH


def test_side_by_side_and_sequential_analysis_agree(settings: Settings, engine: FaceEngine,
                                                    photos: dict[str, Path]) -> None:
    sequential = build_service(settings.model_copy(update={"pipeline": settings.pipeline.model_copy(
        update={"image_workers": 0})}), engine)
    parallel = build_service(settings, engine)
    pair = (photos["obama.jpg"].read_bytes(), photos["obama2.jpg"].read_bytes())
    assert sequential.verify(*pair).decision.score == pytest.approx(parallel.verify(*pair).decision.score, abs=1e-6)
