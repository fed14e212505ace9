from __future__ import annotations

import json
from pathlib import Path

from verifier.config import Settings
from verifier.evaluation.cache import SetTemplates
from verifier.evaluation.datasets import LabeledSet
from verifier.evaluation.evaluate import evaluate
from verifier.evaluation.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_report_holds_every_figure(
    settings: Settings, mini_folder_set: LabeledSet, mini_folder_templates: SetTemplates, tmp_path: Path
) -> None:
    evaluated = evaluate(mini_folder_set, mini_folder_templates, settings.evaluation, "default", "detected", "centre")
    files = write_report(evaluated, tmp_path, {"metrics": 0.1})
    for png in (files.det, files.scores):
        assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 10_000
    document = json.loads(files.json.read_text())
    result = evaluated.result
    assert document["acquisition"]["failures"] == 1 == result.acquisition.failures
    assert document["acquisition"]["reasons"] == {"NO_FACE": 1}
    assert [p["target_fmr"] for p in document["verification"]["points"]] == list(settings.evaluation.fmr_targets)
    assert document["verification"]["points"][1]["fnmr_bootstrap"]["method"].startswith("subject bootstrap")
    assert document["identification"]["gallery"] == 8 and len(document["identification"]["points"]) == 2
    assert document["protocol"] is None
    assert len(document["det"]["fmr"]) == len(document["det"]["fnmr"]) > 100
    text = files.markdown.read_text()
    assert "## 1:N open-set identification" in text and "Rank-1 hit rate" in text
    assert f"FTA 1 of {len(mini_folder_set)} images" in text
    assert "det.png" in text and "scores.png" in text
