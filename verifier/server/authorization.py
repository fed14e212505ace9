"""The authorization interceptor: one decision per call, at the edge, from the
verified caller and the one table in ``verifier.security.roles``.

A caller without a recognised role is refused UNAUTHENTICATED; a role the
table does not grant the method is refused PERMISSION_DENIED with reason
ROLE_FORBIDDEN; both refusals are audited. Streaming methods (health watch,
reflection) are guarded the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from verifier.errors import Reason, VerifierError
from verifier.security.audit import REFUSAL, AuditLog, Entry
from verifier.security.roles import allowed
from verifier.server.errors import status_for
from verifier.server.identity import effective_caller
from verifier.server.request_id import request_id_of

Behaviour = Callable[[Any, grpc.ServicerContext], Any]

_CONSTRUCTORS = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def wrap_handler(handler: grpc.RpcMethodHandler, around: Callable[[Behaviour], Behaviour]) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour, of whichever of the four kinds, wrapped by ``around``."""
    for kind, construct in _CONSTRUCTORS.items():
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            return construct(
                around(behaviour),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class AuthorizationInterceptor(grpc.ServerInterceptor):
    """Lets a call through only when the caller's role may call its method."""

    def __init__(self, tls: bool, audit: AuditLog | None) -> None:
        self.tls = tls
        self.audit = audit

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def around(behaviour: Behaviour) -> Behaviour:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                self._authorize(method, context)
                return behaviour(request, context)

            return guarded

        return wrap_handler(handler, around)

    def _authorize(self, method: str, context: grpc.ServicerContext) -> None:
        caller = effective_caller(context, self.tls)
        if caller.role is None:
            error = VerifierError(Reason.UNAUTHENTICATED, "the client certificate names no known role")
        elif not allowed(method, caller.role):
            error = VerifierError(
                Reason.ROLE_FORBIDDEN, f"the role {caller.role.value} may not call {method}", role=caller.role.value
            )
        else:
            return
        status = status_for(error)
        if self.audit is not None:
            try:
                self.audit.append_decision(Entry(
                    identity=caller.identity, role=caller.role.value if caller.role else "", rpc=method,
                    kind=REFUSAL, outcome=status.code.name, reason=error.reason.value,
                    request_id=request_id_of(context),
                ))
            except VerifierError:
                pass  # refused either way; the failed trail refuses every audited call from now on
        context.abort_with_status(status)
