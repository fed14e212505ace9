"""Server interceptors: per-method latency and status counts for every RPC."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from verifier.server import metrics


class MetricsInterceptor(grpc.ServerInterceptor):
    """Times each unary call and counts it by its final status code."""

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                metrics.LATENCY.labels(method).observe(time.perf_counter() - start)
                code = context.code() or grpc.StatusCode.OK
                metrics.REQUESTS.labels(method, code.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
