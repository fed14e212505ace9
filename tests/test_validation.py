"""Ids, free text and timestamps from callers: properties over generated input."""

from __future__ import annotations

import math
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.errors import Reason, VerifierError
from verifier.validation import (
    MAX_EPOCH_SECONDS,
    MAX_ID_BYTES,
    MAX_TEXT_BYTES,
    MIN_EPOCH_SECONDS,
    identifier,
    text,
    utc_moment,
)

SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@+-"


def _reason(call, *args) -> Reason | None:  # noqa: ANN001
    try:
        call(*args)
    except VerifierError as error:
        assert error.details["field"] == args[1]
        return error.reason
    return None


@given(st.text(max_size=300))
@settings(max_examples=400)
def test_an_id_is_accepted_exactly_when_short_and_of_the_safe_alphabet(value: str) -> None:
    expected_ok = (
        0 < len(value.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES
        and value[0].isascii() and value[0].isalnum()
        and all(ch in SAFE for ch in value)
    )
    reason = _reason(identifier, value, "subject_id")
    assert (reason is None) == expected_ok
    if not expected_ok:
        assert reason in {Reason.FIELD_INVALID, Reason.REQUEST_INCOMPLETE}


@given(st.text(alphabet=SAFE, min_size=1, max_size=400))
def test_safe_ids_fail_only_on_length_or_first_character(value: str) -> None:
    reason = _reason(identifier, value, "name")
    assert (reason is None) == (len(value) <= MAX_ID_BYTES and value[0].isalnum())


@given(st.text(max_size=1500))
@settings(max_examples=400)
def test_text_is_accepted_exactly_when_valid_utf8_bounded_and_free_of_controls(value: str) -> None:
    try:
        size = len(value.encode("utf-8"))
        encodable = True
    except UnicodeEncodeError:
        encodable, size = False, 0
    expected_ok = encodable and size <= MAX_TEXT_BYTES and not any(unicodedata.category(c) == "Cc" for c in value)
    reason = _reason(text, value, "reason")
    assert (reason is None) == expected_ok
    if not expected_ok:
        assert reason is Reason.FIELD_INVALID


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_timestamps_are_accepted_exactly_within_the_protobuf_range(seconds: int, nanos: int) -> None:
    reason = None
    try:
        moment = utc_moment(seconds, nanos, "subject.expires")
    except VerifierError as error:
        reason = error.reason
        moment = None
    in_range = MIN_EPOCH_SECONDS <= seconds <= MAX_EPOCH_SECONDS and 0 <= nanos < 10**9
    assert (reason is None) == in_range
    if moment is not None:
        assert math.floor(moment.timestamp()) == seconds


def test_a_lone_surrogate_is_not_utf8() -> None:
    with pytest.raises(VerifierError) as caught:
        text("bad \udc80 byte", "reason")
    assert caught.value.reason is Reason.FIELD_INVALID and "UTF-8" in caught.value.message
