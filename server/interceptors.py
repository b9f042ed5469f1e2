"""What every call of the service goes through, apart from its own work: timing, and no UNKNOWN status ever.

Server interceptors, as grpc's examples write them: each wraps the method's handler. The
bearer-token check is one too (asyncrl.server.auth), and runs first.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Histogram

log = logging.getLogger(__name__)

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def _wrapped(handler: grpc.RpcMethodHandler | None, wrap: Callable[[Behavior], Behavior]
             ) -> grpc.RpcMethodHandler | None:
    """handler with its unary-unary behavior wrapped; other kinds (health's Watch, reflection) pass unchanged."""
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary), request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class InternalOnUnexpected(grpc.ServerInterceptor):
    """An unexpected exception in a handler becomes INTERNAL, naming the RPC and the error, with the traceback logged.

    gRPC would answer UNKNOWN with no detail; INTERNAL tells the caller it is the server's
    fault. A refusal (context.abort, which sets the code first) passes through unchanged.
    """

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        rpc = handler_call_details.method.rpartition("/")[2]

        def wrap(behavior: Behavior) -> Behavior:
            @functools.wraps(behavior)
            def answer(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(request, context)
                except Exception as error:
                    if context.code() is not None:
                        raise
                    log.exception("%s failed", rpc)
                    context.abort(grpc.StatusCode.INTERNAL,
                                  f"{rpc}: internal error: {type(error).__name__}: {str(error)[:500]}")
                    raise  # unreachable: abort raises

            return answer

        return _wrapped(continuation(handler_call_details), wrap)


class Latency(grpc.ServerInterceptor):
    """Observes the handling time of the named methods (full paths) in their histograms."""

    def __init__(self, histograms: dict[str, Histogram]) -> None:
        self.histograms = histograms

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        histogram = self.histograms.get(handler_call_details.method)
        if histogram is None:
            return handler

        def wrap(behavior: Behavior) -> Behavior:
            @functools.wraps(behavior)
            def timed(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    return behavior(request, context)
                finally:
                    histogram.observe(time.perf_counter() - started)

            return timed

        return _wrapped(handler, wrap)
