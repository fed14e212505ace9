"""Domain errors to gRPC status, in one place.

Every refused request carries a google.rpc.Status whose ErrorInfo has the
machine-readable reason, plus the same reason as trailing metadata
(``verifier-reason``) for clients that do not read rich status. A refusal that
says when to come back (the detail ``retry_after_ms``, set by admission control)
also carries a google.rpc.RetryInfo and gRPC's own ``grpc-retry-pushback-ms``,
which a channel with a retry policy for the code honours by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from verifier.errors import Kind, VerifierError

log = logging.getLogger(__name__)

DOMAIN = "verifier.v1"
REASON_KEY = "verifier-reason"
RETRY_AFTER_DETAIL = "retry_after_ms"
PUSHBACK_KEY = "grpc-retry-pushback-ms"

_STATUS: dict[Kind, grpc.StatusCode] = {
    Kind.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    Kind.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Kind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Kind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Kind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Kind.EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Kind.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    Kind.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Kind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}


def status_for(error: VerifierError) -> grpc.Status:
    code = _STATUS[error.kind]
    info = error_details_pb2.ErrorInfo(reason=error.reason.value, domain=DOMAIN, metadata=error.details)
    details = [_packed(info)]
    extra = [(REASON_KEY, error.reason.value)]
    retry_after_ms = error.details.get(RETRY_AFTER_DETAIL)
    if retry_after_ms is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(retry_after_ms))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
        extra.append((PUSHBACK_KEY, retry_after_ms))
    status = rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=details)
    )
    return _WithMetadata(status, tuple(extra))


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class _WithMetadata(grpc.Status):
    def __init__(self, status: grpc.Status, extra: tuple[tuple[str, str], ...]) -> None:
        self.code = status.code
        self.details = status.details
        self.trailing_metadata = (*status.trailing_metadata, *extra)


Handler = TypeVar("Handler", bound=Callable[..., Any])


def mapped(handler: Handler) -> Handler:
    """Wrap a servicer method: domain errors become their status, anything
    unexpected becomes INTERNAL (logged with its traceback), never a crash."""

    @wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(self, request, context)
        except VerifierError as error:
            context.abort_with_status(status_for(error))
        except Exception:  # noqa: BLE001 - the last line of defence of the server
            log.exception("unexpected failure in %s", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the request was not processed")

    return wrapper  # type: ignore[return-value]
