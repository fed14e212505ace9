"""The 1:1 verification use cases, free of any transport.

The gRPC servicer and the CLI both call this; it turns images and templates
into decisions and keeps per-stage timings with every answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from verifier.errors import VerifierError
from verifier.matching import Decision, Matcher
from verifier.pipeline import FaceEngine, FaceResult, Selection
from verifier.templates import Template


@dataclass(frozen=True)
class Verification:
    decision: Decision
    probe: FaceResult
    reference: FaceResult | None
    timings_ms: dict[str, float]
    model_id: str


class VerificationService:
    def __init__(self, engine: FaceEngine, matcher: Matcher) -> None:
        self.engine = engine
        self.matcher = matcher

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    def extract(self, image: bytes) -> FaceResult:
        return self.engine.analyse(image, Selection.LARGEST)

    def verify(self, probe: bytes, reference: bytes | Template) -> Verification:
        """Probe image against a reference image or template.

        Both images go through the models in one batch. An error names the side
        that failed (``side=probe`` or ``side=reference``) so a kiosk knows
        whether to ask the traveller to look again or to re-read the chip.
        """
        if isinstance(reference, Template):
            reference.require_model(self.model_id)
            results = self.engine.analyse_batch([probe])
        else:
            results = self.engine.analyse_batch([probe, reference])
        for side, result in zip(("probe", "reference"), results):
            if isinstance(result, VerifierError):
                raise result.with_detail(side=side)
        probe_result = results[0]
        reference_result = results[1] if len(results) > 1 else None
        reference_template = reference_result.template if reference_result else reference
        start = time.perf_counter()
        decision = self.matcher.decide(probe_result.template, reference_template)
        timings = dict(probe_result.timings_ms)
        timings["compare"] = (time.perf_counter() - start) * 1000.0
        return Verification(decision, probe_result, reference_result, timings, self.model_id)

    def compare(self, a: Template, b: Template) -> Decision:
        a.require_model(self.model_id)
        return self.matcher.decide(a, b)
