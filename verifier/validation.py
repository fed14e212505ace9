"""Checks on text that callers send and the service stores.

Every id and free-text field is hostile until checked: ids come from a small
safe alphabet so that they can appear in logs, file names and audit records
without escaping; free text is valid UTF-8 without control characters and of
bounded size, so that nothing stored can later break a listing or an answer.
The limits are the service's contract (README, API), not tuning knobs.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta

from verifier.errors import Reason, VerifierError

log = logging.getLogger(__name__)

MAX_ID_BYTES = 128
MAX_TEXT_BYTES = 1024
# Letters, digits and . _ : @ + - ; the first character a letter or digit.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]*\Z")
# The range a google.protobuf.Timestamp may hold: 0001-01-01 to 9999-12-31 UTC.
MIN_EPOCH_SECONDS = -62_135_596_800
MAX_EPOCH_SECONDS = 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = _EPOCH + timedelta(seconds=MAX_EPOCH_SECONDS)
_EARLIEST = _EPOCH + timedelta(seconds=MIN_EPOCH_SECONDS)
# Stored times outside the range are logged once each, up to this many.
_OUT_OF_RANGE_LOGGED = 100
_logged_out_of_range: set[str] = set()


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


def stated_reason(value: str, field: str = "reason") -> str:
    """An operator's reason for a deliberate step (a trail or a store begun
    afresh): text as :func:`text` accepts, stripped, and not blank."""
    reason = text(value, field).strip()
    if not reason:
        raise _invalid(field, "is blank", Reason.FIELD_INVALID)
    return reason


def in_range(value: object) -> bool:
    """Whether ``value`` is a finite number of epoch seconds a timestamp may hold."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and MIN_EPOCH_SECONDS <= value < MAX_EPOCH_SECONDS + 1)


def epoch_seconds(value: object, field: str) -> float:
    """``value`` if it is a number of epoch seconds a timestamp may hold (what
    :func:`utc_moment` accepts of a local request), as a float."""
    if not in_range(value):
        raise _invalid(field, f"{value!r} is not a time between 0001-01-01 and 9999-12-31 (epoch seconds "
                       f"{MIN_EPOCH_SECONDS} to {MAX_EPOCH_SECONDS})", Reason.FIELD_INVALID)
    return float(value)  # type: ignore[arg-type]


def moment(epoch_seconds: float) -> datetime:
    """Stored epoch seconds as an aware UTC datetime. Every value written since
    times are checked is in range; one that is not (an older store, a damaged
    disk) must not make a read fail, so it is shown at the nearer end of the
    range (the latest for one that is not a number: a subject stays listed)
    and logged, and `verifier watchlist stats` lists the subjects holding one."""
    if in_range(epoch_seconds):
        return _EPOCH + timedelta(seconds=epoch_seconds)
    shown = _EARLIEST if isinstance(epoch_seconds, (int, float)) and epoch_seconds < 0 else _LATEST
    key = repr(epoch_seconds)[:64]
    if key not in _logged_out_of_range and len(_logged_out_of_range) < _OUT_OF_RANGE_LOGGED:
        _logged_out_of_range.add(key)
        log.warning("a stored time %s is outside what a timestamp can hold: shown as %s (see `verifier watchlist "
                    "stats`; re-enrol or re-import the record)", key, shown.isoformat())
    return shown


def utc_moment(seconds: int, nanos: int, field: str) -> datetime:
    """A timestamp's parts as an aware datetime, refusing values no timestamp may hold."""
    if not MIN_EPOCH_SECONDS <= seconds <= MAX_EPOCH_SECONDS or not 0 <= nanos < 1_000_000_000:
        raise _invalid(field, f"timestamp {seconds}s {nanos}ns is out of range", Reason.FIELD_INVALID)
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
