"""Scores and decisions: cosine similarity against a threshold chosen for a target FMR."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verifier.config import MatchingSettings
from verifier.templates import Template, TemplateSpec


@dataclass(frozen=True)
class Threshold:
    """A score threshold and what it stands for, with where that figure came from."""

    value: float
    false_match_rate: float
    source: str


@dataclass(frozen=True)
class Decision:
    score: float
    match: bool
    threshold: Threshold


def similarity(a: Template, b: Template, spec: TemplateSpec) -> float:
    """Cosine similarity of two templates of the model ``spec`` describes (both are unit vectors)."""
    a.require(spec)
    b.require(spec)
    return float(np.dot(a.vector, b.vector))


class Matcher:
    """Turns scores into decisions at one operating threshold."""

    def __init__(self, spec: TemplateSpec, threshold: Threshold) -> None:
        self.spec = spec
        self.threshold = threshold

    def decide(self, probe: Template, reference: Template) -> Decision:
        score = similarity(probe, reference, self.spec)
        return Decision(score=score, match=score >= self.threshold.value, threshold=self.threshold)


def default_threshold(settings: MatchingSettings) -> Threshold:
    """The configured threshold, served only for a pack without a calibration table
    where ``matching.allow_uncalibrated`` is set."""
    return Threshold(
        value=settings.default_threshold,
        false_match_rate=settings.default_threshold_fmr,
        source=("configured default (matching.allow_uncalibrated): not measured for this pack; "
                "its FMR held on every pack measured on LFW dev (README, Security)"),
    )
