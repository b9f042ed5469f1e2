"""The server's side of transport security: the bearer-token interceptor and the TLS credentials it serves with.

As grpc's examples/python/auth does it: an interceptor that answers UNAUTHENTICATED to any call
without "authorization: Bearer <token>", comparing in constant time. Health checks stay open, so
container and load-balancer probes need no secret; server reflection is not exempt (it lists the API).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc

from asyncrl.common.config import ServerSecurity
from asyncrl.common.security import AUTHORIZATION_KEY, BEARER, read_pem, read_token

log = logging.getLogger(__name__)

OPEN_PREFIX = "/grpc.health.v1.Health/"


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as handler (unary or streaming) that answers UNAUTHENTICATED."""

    def refuse(_request: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "this server requires 'authorization: Bearer <token>' "
                      "metadata: give the client the server's --auth-token-file")

    make: Callable[..., grpc.RpcMethodHandler] = {
        (False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(refuse, request_deserializer=handler.request_deserializer)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Lets a call through only with the right bearer token; counts (and now and then logs) the refused ones."""

    def __init__(self, token: str) -> None:
        self._expected = (BEARER + token).encode()
        self._lock = threading.Lock()
        self.refused = 0

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIX):
            return handler
        sent = next((value for key, value in handler_call_details.invocation_metadata or ()
                     if key == AUTHORIZATION_KEY), "")
        if hmac.compare_digest(sent.encode() if isinstance(sent, str) else sent, self._expected):
            return handler
        with self._lock:
            self.refused += 1
            refused = self.refused
        if refused & (refused - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a flood of bad calls cannot flood the log
            log.warning("refused %d call(s) without the bearer token (latest: %s)", refused, handler_call_details.method)
        return _refusal(handler)


def interceptors(security: ServerSecurity) -> list[grpc.ServerInterceptor]:
    return [BearerTokenInterceptor(read_token(security.auth_token_file))] if security.auth_token_file else []


def server_credentials(security: ServerSecurity) -> grpc.ServerCredentials | None:
    """TLS with --tls-cert/--tls-key; with --tls-client-ca, clients must present a certificate that CA signed."""
    if not security.tls_cert:
        return None
    client_ca = read_pem(security.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(read_pem(security.tls_key), read_pem(security.tls_cert))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
