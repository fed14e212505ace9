"""The id that ties a call to its audit record: the client's ``x-request-id``
when it sent a sane one, else a fresh random one."""

from __future__ import annotations

import re
import uuid

import grpc

REQUEST_ID_KEY = "x-request-id"
# Echoed to the client in the initial metadata of audited calls.
RESPONSE_KEY = "verifier-request-id"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(context: grpc.ServicerContext) -> str:
    """The caller's request id if it is 1-128 characters of ``[A-Za-z0-9._:-]``,
    otherwise (absent, hostile, too long) a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _SANE.fullmatch(value):
            return value
    return uuid.uuid4().hex
