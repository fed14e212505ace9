"""The 1:1 verification use cases, free of any transport.

The gRPC servicer and the CLI both call this; it turns images and templates
into decisions and keeps per-stage timings with every answer.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from verifier import costs
from verifier.errors import VerifierError
from verifier.imaging import ImageUse
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
    def __init__(self, engine: FaceEngine, matcher: Matcher, image_workers: int = 0) -> None:
        self.engine = engine
        self.matcher = matcher
        self._images = (
            ThreadPoolExecutor(max_workers=image_workers, thread_name_prefix="image") if image_workers else None
        )

    def _analyse_pair(self, probe: bytes, reference: bytes) -> list[FaceResult | VerifierError]:
        """Both images, side by side on the image workers when there are any: at a
        quiet gate this halves the latency; under load it costs nothing extra.
        The probe is a live capture, the reference a document photo (their size
        limits differ). Each image runs in a copy of this thread's context, so
        the request's deadline (:mod:`verifier.deadlines`) holds in the workers too,
        and their CPU is counted for the request (:mod:`verifier.costs`)."""
        sides = ((probe, ImageUse.LIVE), (reference, ImageUse.DOCUMENT))
        if self._images is None:
            return [self.engine.analyse_batch([image], Selection.LARGEST, use)[0] for image, use in sides]
        pending = [
            self._images.submit(contextvars.copy_context().run, costs.run_metered, self.engine.analyse_batch,
                                [image], Selection.LARGEST, use)
            for image, use in sides
        ]
        return [future.result()[0] for future in pending]

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    def extract(self, image: bytes, use: ImageUse = ImageUse.LIVE) -> FaceResult:
        """A template from a live capture or a chip photo (``use`` sets its limits and formats)."""
        return self.engine.analyse(image, Selection.LARGEST, use)

    def verify(self, probe: bytes, reference: bytes | Template) -> Verification:
        """Probe image against a reference image or template.

        An error names the side that failed (``side=probe`` or ``side=reference``)
        so a kiosk knows whether to ask the traveller to look again or to re-read
        the chip. Timings are per side (``probe.detect``, ``reference.embed``, ...).
        """
        if isinstance(reference, Template):
            reference.require(self.engine.template_spec)
            results = self.engine.analyse_batch([probe], Selection.LARGEST, ImageUse.LIVE)
        else:
            results = self._analyse_pair(probe, reference)
        for side, result in zip(("probe", "reference"), results):
            if isinstance(result, VerifierError):
                raise result.with_detail(side=side)
        probe_result = results[0]
        reference_result = results[1] if len(results) > 1 else None
        reference_template = reference_result.template if reference_result else reference
        start = time.perf_counter()
        decision = self.matcher.decide(probe_result.template, reference_template)
        timings = {f"probe.{stage}": ms for stage, ms in probe_result.timings_ms.items()}
        if reference_result is not None:
            timings.update({f"reference.{stage}": ms for stage, ms in reference_result.timings_ms.items()})
        timings["compare"] = (time.perf_counter() - start) * 1000.0
        return Verification(decision, probe_result, reference_result, timings, self.model_id)

    def compare(self, a: Template, b: Template) -> Decision:
        return self.matcher.decide(a, b)
