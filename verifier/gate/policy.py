"""What the gate does with the findings: ACCEPT, RETRY or REFER, with reasons.

The policy only reads findings and configuration. ACCEPT needs every check to
have been made and passed; a check that could not be made (a fault, a
watch-list outage, a replay check without a reference image) is never
treated as a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from verifier.config import GateSettings


class GateDecision(str, Enum):
    ACCEPT = "ACCEPT"
    RETRY = "RETRY"
    REFER = "REFER"


# Reason codes the kiosk acts on (quality codes come from verifier.face.quality).
NO_FACE = "NO_FACE"
# A face was found but too small for the threshold to hold (the pipeline's
# eye-distance floor): the same code the quality check gives.
MOVE_CLOSER = "MOVE_CLOSER"
NO_MATCH = "NO_MATCH"
WATCHLIST_HIT = "WATCHLIST_HIT"
WATCHLIST_UNAVAILABLE = "WATCHLIST_UNAVAILABLE"
LIVE_IS_DOCUMENT_PHOTO = "LIVE_IS_DOCUMENT_PHOTO"
# The live capture shows a display's pixel grid (moiré): a face on a screen.
LIVE_SHOWS_DISPLAY = "LIVE_SHOWS_DISPLAY"
PRESENTATION_ATTACK_SUSPECTED = "PRESENTATION_ATTACK_SUSPECTED"
MULTIPLE_PEOPLE = "MULTIPLE_PEOPLE"
REFERENCE_UNUSABLE = "REFERENCE_UNUSABLE"
REPLAY_NOT_CHECKED = "REPLAY_NOT_CHECKED"
RETRY_BUDGET_EXHAUSTED = "RETRY_BUDGET_EXHAUSTED"
# A stream that ended without a decision: its time or frames spent, the
# client silent for too long, or the client closing it.
TIME_BUDGET_EXHAUSTED = "TIME_BUDGET_EXHAUSTED"
FRAME_BUDGET_EXHAUSTED = "FRAME_BUDGET_EXHAUSTED"
FRAME_TIMEOUT = "FRAME_TIMEOUT"
CAPTURE_ENDED = "CAPTURE_ENDED"
INTERNAL_FAULT = "INTERNAL_FAULT"
# The decision could not be recorded (the audit trail or the answer store is on
# a disk that is full, failing or read-only): a decision off the record is
# never given, so the traveller is referred, whatever the checks found.
STORAGE_FAULT = "STORAGE_FAULT"


@dataclass(frozen=True)
class Findings:
    """What the checks found; ``None`` means the check was not reached."""

    attempt: int = 1
    internal_fault: bool = False
    reference_unusable: bool = False
    face_found: bool = False
    face_too_small: bool = False
    quality_codes: tuple[str, ...] = ()
    match: bool | None = None
    watchlist_searched: bool = False
    watchlist_hits: int = 0
    replay_checked: bool = False
    document_photo: bool = False
    display_pattern: bool = False
    static_picture: bool = False
    pad_attack: bool = False
    multiple_people: bool = False


@dataclass(frozen=True)
class Verdict:
    decision: GateDecision
    reasons: tuple[str, ...] = field(default_factory=tuple)


class GatePolicy:
    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings

    def decide(self, f: Findings) -> Verdict:
        """REFER for anything an officer must see; else RETRY for a capture
        that is not good enough (REFER once the retry budget is spent); else
        REFER unless the traveller matches and every check passed."""
        refer = []
        if f.internal_fault:
            refer.append(INTERNAL_FAULT)
        if f.reference_unusable:
            refer.append(REFERENCE_UNUSABLE)
        if f.watchlist_hits:
            refer.append(WATCHLIST_HIT)
        if f.document_photo:
            refer.append(LIVE_IS_DOCUMENT_PHOTO)
        if f.display_pattern:
            refer.append(LIVE_SHOWS_DISPLAY)
        if f.static_picture or f.pad_attack:
            refer.append(PRESENTATION_ATTACK_SUSPECTED)
        if f.multiple_people:
            refer.append(MULTIPLE_PEOPLE)
        outage = f.face_found and not f.watchlist_searched and not f.internal_fault
        if outage and self.settings.watchlist_outage == "refer":
            refer.append(WATCHLIST_UNAVAILABLE)
        if refer:
            return Verdict(GateDecision.REFER, tuple(refer))
        if f.face_found:
            retry = list(f.quality_codes)
        else:
            retry = [MOVE_CLOSER if f.face_too_small else NO_FACE]
        if outage:
            retry.append(WATCHLIST_UNAVAILABLE)
        if retry:
            if f.attempt >= self.settings.retry_budget:
                return Verdict(GateDecision.REFER, (*retry, RETRY_BUDGET_EXHAUSTED))
            return Verdict(GateDecision.RETRY, tuple(retry))
        if f.match is not True:
            return Verdict(GateDecision.REFER, (NO_MATCH,))
        if not f.replay_checked and not self.settings.allow_unchecked_replay:
            return Verdict(GateDecision.REFER, (REPLAY_NOT_CHECKED,))
        return Verdict(GateDecision.ACCEPT)
