"""Domain errors to gRPC status, in one place.

Every refused request carries a google.rpc.Status whose ErrorInfo has the
machine-readable reason, plus the same reason as trailing metadata
(``verifier-reason``) for clients that do not read rich status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from verifier.errors import Kind, VerifierError

log = logging.getLogger(__name__)

DOMAIN = "verifier.v1"
REASON_KEY = "verifier-reason"

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
    detail = any_pb2.Any()
    detail.Pack(info)
    status = rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=[detail])
    )
    return _WithReason(status, error.reason.value)


class _WithReason(grpc.Status):
    def __init__(self, status: grpc.Status, reason: str) -> None:
        self.code = status.code
        self.details = status.details
        self.trailing_metadata = (*status.trailing_metadata, (REASON_KEY, reason))


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


def reason_of(error: grpc.RpcError) -> str | None:
    """The machine-readable reason of a refused call (client side helper)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None
