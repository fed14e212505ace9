"""Domain errors: each carries a machine-readable reason and the kind of failure.

The core raises these and nothing else for bad input; the transport maps the
kind to a gRPC status in one place (``verifier.server.errors``), so that a kiosk
can act on the reason (ask the traveller to look again, send them to an officer).
"""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    """What sort of failure: decides the status code, not the reason."""

    INVALID_INPUT = "invalid_input"
    PRECONDITION = "precondition"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    UNAVAILABLE = "unavailable"
    EXHAUSTED = "exhausted"
    DEADLINE = "deadline"
    FORBIDDEN = "forbidden"
    UNAUTHENTICATED = "unauthenticated"


class Reason(str, Enum):
    IMAGE_EMPTY = "IMAGE_EMPTY"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    IMAGE_TOO_SMALL = "IMAGE_TOO_SMALL"
    IMAGE_UNDECODABLE = "IMAGE_UNDECODABLE"
    IMAGE_FORMAT_UNSUPPORTED = "IMAGE_FORMAT_UNSUPPORTED"
    NO_FACE = "NO_FACE"
    # A face found, but below the quality floor the calibration was shown to hold at.
    FACE_TOO_SMALL = "FACE_TOO_SMALL"
    TEMPLATE_MALFORMED = "TEMPLATE_MALFORMED"
    TEMPLATE_VERSION_UNSUPPORTED = "TEMPLATE_VERSION_UNSUPPORTED"
    TEMPLATE_MODEL_MISMATCH = "TEMPLATE_MODEL_MISMATCH"
    REQUEST_INCOMPLETE = "REQUEST_INCOMPLETE"
    WATCHLIST_NOT_FOUND = "WATCHLIST_NOT_FOUND"
    WATCHLIST_EXISTS = "WATCHLIST_EXISTS"
    SUBJECT_NOT_FOUND = "SUBJECT_NOT_FOUND"
    SUBJECT_EXISTS = "SUBJECT_EXISTS"
    INDEX_NOT_READY = "INDEX_NOT_READY"
    INDEX_UNAVAILABLE = "INDEX_UNAVAILABLE"
    TOO_MANY_TEMPLATES = "TOO_MANY_TEMPLATES"
    # The store holds watchlist.max_watchlists lists already.
    TOO_MANY_WATCHLISTS = "TOO_MANY_WATCHLISTS"
    FIELD_INVALID = "FIELD_INVALID"
    WATCHLIST_NOT_EMPTY = "WATCHLIST_NOT_EMPTY"
    STORE_MISSING = "STORE_MISSING"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    OVERLOADED = "OVERLOADED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    ROLE_FORBIDDEN = "ROLE_FORBIDDEN"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    WATCHLIST_NEEDS_MIGRATION = "WATCHLIST_NEEDS_MIGRATION"
    READ_ONLY_REPLICA = "READ_ONLY_REPLICA"
    STALE_EPOCH = "STALE_EPOCH"
    REPLICA_DIVERGED = "REPLICA_DIVERGED"
    BUNDLE_REFUSED = "BUNDLE_REFUSED"
    REPLICA_UNCONFIRMED = "REPLICA_UNCONFIRMED"
    DUPLICATE_IDENTITY = "DUPLICATE_IDENTITY"
    DUPLICATE_SUSPECTED = "DUPLICATE_SUSPECTED"
    REGISTRATION_REFUSED = "REGISTRATION_REFUSED"


_KIND_OF: dict[Reason, Kind] = {
    Reason.IMAGE_EMPTY: Kind.INVALID_INPUT,
    Reason.IMAGE_TOO_LARGE: Kind.INVALID_INPUT,
    Reason.IMAGE_TOO_SMALL: Kind.INVALID_INPUT,
    Reason.IMAGE_UNDECODABLE: Kind.INVALID_INPUT,
    Reason.IMAGE_FORMAT_UNSUPPORTED: Kind.INVALID_INPUT,
    Reason.NO_FACE: Kind.PRECONDITION,
    Reason.FACE_TOO_SMALL: Kind.PRECONDITION,
    Reason.TEMPLATE_MALFORMED: Kind.INVALID_INPUT,
    Reason.TEMPLATE_VERSION_UNSUPPORTED: Kind.INVALID_INPUT,
    Reason.TEMPLATE_MODEL_MISMATCH: Kind.PRECONDITION,
    Reason.REQUEST_INCOMPLETE: Kind.INVALID_INPUT,
    Reason.WATCHLIST_NOT_FOUND: Kind.NOT_FOUND,
    Reason.WATCHLIST_EXISTS: Kind.ALREADY_EXISTS,
    Reason.SUBJECT_NOT_FOUND: Kind.NOT_FOUND,
    Reason.SUBJECT_EXISTS: Kind.ALREADY_EXISTS,
    Reason.INDEX_NOT_READY: Kind.UNAVAILABLE,
    # An external index (Milvus) failed or timed out: the service is out of
    # service until it answers again and agrees with the store.
    Reason.INDEX_UNAVAILABLE: Kind.UNAVAILABLE,
    Reason.TOO_MANY_TEMPLATES: Kind.INVALID_INPUT,
    Reason.TOO_MANY_WATCHLISTS: Kind.PRECONDITION,
    Reason.FIELD_INVALID: Kind.INVALID_INPUT,
    Reason.WATCHLIST_NOT_EMPTY: Kind.PRECONDITION,
    Reason.STORE_MISSING: Kind.UNAVAILABLE,
    Reason.STORE_UNAVAILABLE: Kind.UNAVAILABLE,
    Reason.OVERLOADED: Kind.EXHAUSTED,
    Reason.DEADLINE_EXCEEDED: Kind.DEADLINE,
    Reason.ROLE_FORBIDDEN: Kind.FORBIDDEN,
    Reason.UNAUTHENTICATED: Kind.UNAUTHENTICATED,
    Reason.WATCHLIST_NEEDS_MIGRATION: Kind.PRECONDITION,
    # A write sent to a replica: the detail names the primary to send it to.
    Reason.READ_ONLY_REPLICA: Kind.PRECONDITION,
    # A change, or a primary, of an epoch older than one already seen (fencing).
    Reason.STALE_EPOCH: Kind.PRECONDITION,
    # A follower's history is not the primary's (an old primary's unreplicated
    # writes): it must load a fresh snapshot.
    Reason.REPLICA_DIVERGED: Kind.PRECONDITION,
    # A partner bundle not imported; the detail ``cause`` says why.
    Reason.BUNDLE_REFUSED: Kind.PRECONDITION,
    # Synchronous mode: the change is committed on the primary, but no replica
    # confirmed holding it in time; its outcome must be checked before a retry.
    Reason.REPLICA_UNCONFIRMED: Kind.UNAVAILABLE,
    # Registry: the face (or document) is registered under another traveller
    # id, which the detail ``other_traveller_id`` names for the officer.
    Reason.DUPLICATE_IDENTITY: Kind.ALREADY_EXISTS,
    # Registry: the faces resemble a registered traveller (named in
    # ``other_traveller_id``) more than strangers do at the registry's size,
    # short of certain: nothing is stored; an officer compares them and decides.
    Reason.DUPLICATE_SUSPECTED: Kind.PRECONDITION,
    # Registry: the captures failed a gate check (the detail ``causes``: quality
    # codes, NO_MATCH, LIVE_IS_DOCUMENT_PHOTO, ...); the kiosk may capture again.
    Reason.REGISTRATION_REFUSED: Kind.PRECONDITION,
}


# Refusals that are failures to acquire (ISO/IEC 19795-1): counted as FTA, never hidden.
ACQUISITION_FAILURES = frozenset({Reason.NO_FACE, Reason.FACE_TOO_SMALL})


class VerifierError(Exception):
    """A request the core cannot serve, with a reason the caller can act on.

    ``details`` holds small string facts (which side of a comparison, sizes,
    the expected model) that travel to the client as error metadata.
    """

    def __init__(self, reason: Reason, message: str, **details: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = {k: str(v) for k, v in details.items()}

    @property
    def kind(self) -> Kind:
        return _KIND_OF[self.reason]

    def with_detail(self, **details: object) -> "VerifierError":
        """The same error with more context added (for example ``side="probe"``)."""
        self.details.update({k: str(v) for k, v in details.items()})
        return self


class ModelPackError(Exception):
    """A model file is missing, fails its hash, or cannot be prepared: never served."""
