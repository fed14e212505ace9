"""What the watch-list store answers with: lists, subjects, their images and
templates as the tables hold them, and what applying a change from the feed
did (for the index above the store to follow)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from verifier.storage.feed import Change
from verifier.templates import Template


@dataclass(frozen=True)
class Applied:
    """What applying a change did, for the index above the store to follow:
    lists created or dropped, subjects (row, list, vectors by model, expiry)
    added, and (row, list, template count) removed."""

    change: Change
    created: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    added: tuple[tuple[int, str, list[Template], float | None], ...] = ()
    removed: tuple[tuple[int, str, int], ...] = ()
    # Registry travellers whose templates changed: (row, the templates now
    # held, or None when erased), for the registry's index to follow.
    travellers: tuple[tuple[int, list[Template] | None], ...] = ()


@dataclass(frozen=True)
class Provenance:
    """Where a partner's list came from: the signed bundle it was imported from."""

    issuer: str
    key_id: str
    sequence: int
    created_at: datetime
    expires_at: datetime
    model_id: str


@dataclass(frozen=True)
class Watchlist:
    name: str
    description: str
    created_at: datetime
    subjects: int = 0
    templates: int = 0


@dataclass(frozen=True)
class SubjectEntry:
    """What the enrolling agency says about a person; the subject id is theirs,
    unique within its watch-list."""

    watchlist: str
    subject_id: str
    reason: str
    source_agency: str
    external_ref: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Subject:
    """A stored subject. ``row`` is the store's own key: never reused, so a
    subject removed and enrolled again is a new row."""

    entry: SubjectEntry
    row: int
    created_at: datetime
    template_count: int
    model_ids: tuple[str, ...]
    # Enrolment images kept: 0 for a subject enrolled from templates alone (or
    # before schema 2), which cannot be migrated to another model.
    image_count: int = 0

    def expired(self, now: float) -> bool:
        return self.entry.expires_at is not None and self.entry.expires_at.timestamp() <= now


@dataclass(frozen=True)
class SearchableTemplates:
    """The live templates of one watch-list, ready for the index."""

    rows: np.ndarray
    positions: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class StoredImage:
    """An enrolment image as it was sent, with the sha256 and size it was stored with."""

    position: int
    sha256: str
    size: int
    data: bytes

    @classmethod
    def of(cls, position: int, data: bytes) -> "StoredImage":
        return cls(position, hashlib.sha256(data).hexdigest(), len(data), data)

    @property
    def intact(self) -> bool:
        """Whether the bytes still hash to what was stored: a damaged image is never re-extracted."""
        return len(self.data) == self.size and hashlib.sha256(self.data).hexdigest() == self.sha256


@dataclass(frozen=True)
class Unmigrated:
    """The subjects of one watch-list that have no template of the served model:
    ``rows`` of them all, and of those the ``without_images`` that cannot be
    migrated (enrolled from templates alone, or before images were kept)."""

    watchlist: str
    rows: frozenset[int]
    without_images: frozenset[int]


@dataclass(frozen=True)
class QuarantinedTemplate:
    """A stored template row that fails the template checks (an older format, a
    wrong dimension, damaged bytes): never searched, reported to the operator."""

    watchlist: str
    subject_id: str
    row: int
    position: int
    reason: str
    detail: str

