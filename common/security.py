"""The client's side of transport security: a channel with TLS (mutual, if asked) and the bearer token on every call.

The server's side is asyncrl.server.auth; both read their files through read_token and read_pem.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from asyncrl.common.config import ClientSecurity

AUTHORIZATION_KEY = "authorization"  # metadata keys are lower case on the wire
BEARER = "Bearer "


def read_token(path: str) -> str:
    """The token in a file, without surrounding whitespace (a trailing newline is usual in secret files)."""
    return Path(path).read_text().strip()


def read_pem(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds "authorization: Bearer <token>" to every call, unary or streaming (server reflection streams).

    An interceptor rather than grpc.access_token_call_credentials: call credentials are only sent over
    TLS channels, and a token over plaintext (localhost, or behind a TLS-terminating proxy) must work too.
    """

    def __init__(self, token: str) -> None:
        self._metadata = (AUTHORIZATION_KEY, BEARER + token)

    def _call(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        metadata = (*(client_call_details.metadata or ()), self._metadata)
        return continuation(client_call_details._replace(metadata=metadata), request)

    intercept_unary_unary = intercept_unary_stream = _call
    intercept_stream_unary = intercept_stream_stream = _call


def client_channel(address: str, security: ClientSecurity, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to address: TLS when --tls-ca is set (with a client certificate when given), the token when set."""
    if security.tls_ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read_pem(security.tls_ca),
            private_key=read_pem(security.tls_client_key),
            certificate_chain=read_pem(security.tls_client_cert),
        )
        channel = grpc.secure_channel(address, credentials, options=list(options))
    else:
        channel = grpc.insecure_channel(address, options=list(options))
    if security.auth_token_file:
        channel = grpc.intercept_channel(channel, _BearerToken(read_token(security.auth_token_file)))
    return channel
