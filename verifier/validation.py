"""Checks on text that callers send and the service stores.

Every id and free-text field is hostile until checked: ids come from a small
safe alphabet so that they can appear in logs, file names and audit records
without escaping; free text is valid UTF-8 without control characters and of
bounded size, so that nothing stored can later break a listing or an answer.
The limits are the service's contract (README, API), not tuning knobs.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta

from verifier.errors import Reason, VerifierError

MAX_ID_BYTES = 128
MAX_TEXT_BYTES = 1024
# Letters, digits and . _ : @ + - ; the first character a letter or digit.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]*\Z")
# The range a google.protobuf.Timestamp may hold: 0001-01-01 to 9999-12-31 UTC.
MIN_EPOCH_SECONDS = -62_135_596_800
MAX_EPOCH_SECONDS = 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _invalid(field: str, message: str, reason: Reason) -> VerifierError:
    return VerifierError(reason, f"{field}: {message}", field=field)


def identifier(value: str, field: str, reason: Reason = Reason.FIELD_INVALID) -> str:
    """``value`` if it is a non-empty id of at most 128 bytes from the safe alphabet.
    A missing id is REQUEST_INCOMPLETE unless the caller names another reason."""
    if not value:
        raise _invalid(field, "is required", Reason.REQUEST_INCOMPLETE if reason is Reason.FIELD_INVALID else reason)
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise _invalid(field, f"is {size} bytes, at most {MAX_ID_BYTES}", reason)
    if not _ID.match(value):
        raise _invalid(field, "may hold only letters, digits and . _ : @ + - (starting with a letter or digit)", reason)
    return value


def text(value: str, field: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """``value`` if it is valid UTF-8 text of at most ``max_bytes`` without control characters."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _invalid(field, "is not valid UTF-8", Reason.FIELD_INVALID) from exc
    if size > max_bytes:
        raise _invalid(field, f"is {size} bytes, at most {max_bytes}", Reason.FIELD_INVALID)
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise _invalid(field, "holds control characters", Reason.FIELD_INVALID)
    return value


def moment(epoch_seconds: float) -> datetime:
    """Epoch seconds as an aware UTC datetime, for any value :func:`utc_moment` accepts."""
    return _EPOCH + timedelta(seconds=epoch_seconds)


def utc_moment(seconds: int, nanos: int, field: str) -> datetime:
    """A timestamp's parts as an aware datetime, refusing values no timestamp may hold."""
    if not MIN_EPOCH_SECONDS <= seconds <= MAX_EPOCH_SECONDS or not 0 <= nanos < 1_000_000_000:
        raise _invalid(field, f"timestamp {seconds}s {nanos}ns is out of range", Reason.FIELD_INVALID)
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
