"""Request parsing inside the call, so that a message that cannot be parsed is
refused with a reason instead of gRPC's bare INTERNAL.

gRPC parses a request before any handler runs; protobuf refuses, for example,
a string field that is not valid UTF-8, and gRPC then answers INTERNAL with no
machine-readable reason. This interceptor hands the raw bytes through and
parses them where a status can still be set: INVALID_ARGUMENT, FIELD_INVALID.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from verifier.errors import Reason, VerifierError
from verifier.server.errors import status_for


class RequestDecodingInterceptor(grpc.ServerInterceptor):
    """Parses unary requests itself; put it first, so it wraps every other interceptor."""

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        inner, parse = handler.unary_unary, handler.request_deserializer
        method = handler_call_details.method

        def parsed(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and kin: the bytes are not this message
                context.abort_with_status(status_for(VerifierError(
                    Reason.FIELD_INVALID,
                    f"the request is not a valid {method} message (a string field that is not UTF-8, or bad encoding)",
                    field="request",
                )))
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            parsed, request_deserializer=None, response_serializer=handler.response_serializer
        )
