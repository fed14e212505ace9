"""The registry's duplicate decision on real LFW dev embeddings: true duplicates
refused or referred, a stranger with one lookalike capture never refused as
certain, thresholds that rise with the registry's size, and the configured
non-mated tails as LFW dev measures them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from benchmarks.duplicates import EXCEEDANCE, by_person, fused_non_mated, merged_people
from verifier.config import RegistrySettings, Settings
from verifier.evaluation.cache import embed_set
from verifier.evaluation.datasets import load_set
from verifier.pipeline import FaceEngine, Selection
from verifier.registry.duplicates import (
    Candidate,
    DuplicatePolicy,
    Outcome,
    fit_tail,
    fuse,
    registration_rate,
    threshold,
)

# Search depth per face, as the service asks the index.
DEPTH = RegistrySettings().search_depth


@dataclass(frozen=True)
class Gallery:
    """LFW dev people with four or more images, registered with their first two
    (row = person's position); their third and fourth are a duplicate
    registration. People with two or three images are strangers to it (their first two)."""

    stored: np.ndarray  # (travellers, 2, dimension)
    again: np.ndarray  # (travellers, 2, dimension)
    strangers: np.ndarray  # (people, 2, dimension)
    vectors: np.ndarray
    people: np.ndarray

    @property
    def size(self) -> int:
        return self.stored.shape[0] * self.stored.shape[1]

    def candidates(self, faces: np.ndarray, exclude: int | None = None) -> list[Candidate]:
        """Each face's ``DEPTH`` best stored templates, as the service's search returns them."""
        flat = self.stored.reshape(-1, self.stored.shape[2])
        rows = np.repeat(np.arange(self.stored.shape[0]), self.stored.shape[1])
        results = []
        for face in faces:
            scores = flat @ face
            top = np.argsort(scores)[::-1][:DEPTH]
            results.append((scores[top], rows[top]))
        return fuse(results, exclude)


@pytest.fixture(scope="module")
def gallery(engine: FaceEngine, settings: Settings, lfw_dev: Path) -> Gallery:
    labeled = load_set(lfw_dev)
    templates = embed_set(engine, labeled, settings.evaluation.cache_dir, Selection.CENTRE)
    vectors = templates.vectors[templates.acquired]
    people = merged_people(lfw_dev, np.asarray(labeled.subjects)[templates.acquired])
    four = [rows for rows in by_person(people).values() if len(rows) >= 4]
    few = [rows for rows in by_person(people).values() if 2 <= len(rows) < 4]
    return Gallery(np.stack([vectors[rows[:2]] for rows in four]), np.stack([vectors[rows[2:4]] for rows in four]),
                   np.stack([vectors[rows[:2]] for rows in few]), vectors, people)


def test_true_duplicates_are_refused_or_referred(gallery: Gallery) -> None:
    """Every person registering again with two new captures is flagged against
    their own record, at the gallery's size, nearly always as certain."""
    policy = DuplicatePolicy(RegistrySettings())
    findings = [policy.decide(gallery.candidates(faces), gallery.size) for faces in gallery.again]
    named = [f.candidate is not None and f.candidate.row == row for row, f in enumerate(findings)]
    flagged = [f.outcome is not Outcome.NONE and right for f, right in zip(findings, named)]
    certain = [f.outcome is Outcome.CERTAIN and right for f, right in zip(findings, named)]
    assert len(findings) > 200
    assert np.mean(flagged) >= 0.98, f"{len(findings) - sum(flagged)} of {len(findings)} duplicates passed"
    assert np.mean(certain) >= 0.90


def test_a_stranger_with_one_lookalike_capture_is_referred_not_refused(gallery: Gallery) -> None:
    """A chip photo of a registered traveller with a stranger's live capture:
    one face scores as high as a duplicate's, the other like a stranger's. An
    officer sees it (SUSPECTED, one face); it is never a certain duplicate."""
    policy = DuplicatePolicy(RegistrySettings())
    outcomes = []
    for row, chip in enumerate(gallery.again[:, 0]):
        live = gallery.strangers[row % len(gallery.strangers), 0]
        candidates = gallery.candidates(np.stack([chip, live]))
        own = next(c for c in candidates if c.row == row)
        assert own.both < own.either
        finding = policy.decide(candidates, gallery.size)
        outcomes.append((finding.outcome, finding.found_by))
    assert all(outcome is not Outcome.CERTAIN for outcome, _ in outcomes)
    referred = [outcome for outcome, found_by in outcomes if outcome is Outcome.SUSPECTED and found_by == "one_face"]
    assert len(referred) >= 0.9 * len(outcomes)


def test_the_document_makes_a_suspected_face_certain(gallery: Gallery) -> None:
    """The same document presented with a face the search only suspects is a
    certain duplicate; the document gives faces that strangers reach nothing."""
    policy = DuplicatePolicy(RegistrySettings())
    chip, live = gallery.again[0, 0], gallery.strangers[0, 0]
    candidates = gallery.candidates(np.stack([chip, live]))
    assert policy.decide(candidates, gallery.size).outcome is Outcome.SUSPECTED
    found = policy.decide(candidates, gallery.size, frozenset({0}))
    assert found.candidate is not None
    assert (found.outcome, found.found_by, found.candidate.row) == (Outcome.CERTAIN, "face+document", 0)
    passed = 0
    for faces in gallery.strangers:
        candidates = gallery.candidates(faces)
        if policy.decide(candidates, gallery.size).outcome is Outcome.NONE:
            passed += 1
            every = frozenset(c.row for c in candidates)
            assert policy.decide(candidates, gallery.size, every).outcome is Outcome.NONE
    assert passed >= 0.9 * len(gallery.strangers)


def test_thresholds_rise_with_the_registry_and_hold_their_rate() -> None:
    """The thresholds rise with size (more strangers, a higher best of them) and
    at each the chance a newcomer's best stranger reaches them is the target."""
    config = RegistrySettings()
    policy = DuplicatePolicy(config)
    sizes = [1_000, 1_000_000, 10_000_000, 20_000_000]
    limits = [policy.thresholds(size) for size in sizes]
    for smaller, larger in zip(limits, limits[1:]):
        assert smaller.certain < larger.certain
        assert smaller.refer_both < larger.refer_both
        assert smaller.refer_either < larger.refer_either
    for size, at in zip(sizes, limits):
        assert at.refer_both < at.certain
        assert registration_rate(config.duplicate_tail_both, at.certain, size) == pytest.approx(
            config.duplicate_certain_rate, rel=1e-6)
        assert registration_rate(config.duplicate_tail_both, at.refer_both, size) == pytest.approx(
            config.duplicate_refer_rate, rel=1e-6)
    assert limits[-1].refer_both > config.duplicate_threshold  # 0.60 alone would flag strangers at 10M travellers
    assert threshold(config.duplicate_tail_both, config.duplicate_refer_rate, 1) == config.duplicate_tail_both.anchor


def test_the_configured_tails_are_lfw_devs(gallery: Gallery) -> None:
    """The served tails are what LFW dev's fused non-mated scores give (the
    benchmark's draw), and the fitted exponential does not under-predict the
    measured tail beyond the anchor (the thresholds err high, not low)."""
    config = RegistrySettings()
    both, either = fused_non_mated(gallery.vectors, gallery.people, seed=13)
    for scores, served in ((both, config.duplicate_tail_both), (either, config.duplicate_tail_either)):
        fitted = fit_tail(scores, EXCEEDANCE)
        assert fitted.anchor == pytest.approx(served.anchor, abs=5e-4)
        assert fitted.scale == pytest.approx(served.scale, abs=5e-4)
        deep = float(np.quantile(scores, 1.0 - 10 / len(scores)))
        assert served.exceedance * np.exp(-(deep - served.anchor) / served.scale) >= 10 / len(scores)


def test_a_referral_rate_below_the_refusal_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate_refer_rate"):
        DuplicatePolicy(RegistrySettings(duplicate_certain_rate=1e-2, duplicate_refer_rate=1e-4))
