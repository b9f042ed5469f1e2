"""Serialized requests in, serialized replies out: the RPCs under a GrpcConnection, with retries and typed errors.

This module does not import torch, so that the process worker/rpc_process.py starts stays small.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Protocol

import grpc

from asyncrl.common.config import WorkerOptions
from asyncrl.common.security import client_channel
from asyncrl.v1 import parameter_server_pb2 as pb

log = logging.getLogger(__name__)

# Method paths are /<service>/<method>; the service's name comes from the generated descriptor, as the server's does.
SERVICE = f"/{pb.DESCRIPTOR.services_by_name['ParameterServerService'].full_name}/"

# Codes that mean "try the same call again later": the server is restarting, overloaded or far away.
# A server shutting down cancels calls that arrived but had no handler thread yet (CANCELLED); a retried
# push is applied at most once (same worker id and sequence number), so retrying those is safe too.
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


class UnknownWorker(Exception):
    """The server does not know this worker id (it restarted): register again."""


class StaleGradients(Exception):
    """The server refused gradients computed against too old a version: pull and recompute."""


class Stopped(Exception):
    """The worker was asked to stop while waiting to retry."""


class Refused(grpc.RpcError):
    """A call refused for good (not transient, not NOT_FOUND or ABORTED): a misconfiguration to report."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Calls(Protocol):
    """RPCs by method name (RegisterWorker, PullWeights, PushGradients), on serialized messages.

    call() and the receivers start() returns raise UnknownWorker (NOT_FOUND), StaleGradients
    (ABORTED), Stopped or Refused; transient failures are retried until the stop event is set.
    One call at a time: a call may start once the previous one's reply has been taken.
    """

    def call(self, method: str, request: bytes) -> bytes: ...

    def start(self, method: str, request: bytes) -> Callable[[], bytes]:
        """Sends the call on its way; the returned function waits for its reply."""
        ...

    def close(self) -> None: ...


class ChannelCalls:
    """Blocking calls on one channel, in the caller's thread, with capped, jittered exponential backoff."""

    def __init__(self, options: WorkerOptions, stop: threading.Event, seed: int = 0) -> None:
        self.options = options
        self.stop = stop
        max_bytes = int(options.max_message_mb * 2**20)
        self.channel = client_channel(
            options.server, options,
            options=[
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.max_receive_message_length", max_bytes),
                # gRPC's own reconnect backoff grows to 120 s; keep it within ours, so that a worker
                # reaches a restarted server about --max-backoff seconds after it is back.
                ("grpc.initial_reconnect_backoff_ms", min(1000, int(options.max_backoff * 1000))),
                ("grpc.max_reconnect_backoff_ms", int(options.max_backoff * 1000)),
            ],
        )
        self._methods: dict[str, grpc.UnaryUnaryMultiCallable] = {}
        self._jitter = random.Random(seed)

    def call(self, method: str, request: bytes) -> bytes:
        """One RPC with a deadline, retried on transient errors; NOT_FOUND and ABORTED become exceptions."""
        invoke = self._methods.get(method)
        if invoke is None:  # no serializers: bytes in, bytes out
            invoke = self._methods[method] = self.channel.unary_unary(SERVICE + method, _registered_method=True)
        delay = 0.1
        while True:
            try:
                return invoke(request, timeout=self.options.rpc_deadline)
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    raise UnknownWorker(error.details()) from None
                if code == grpc.StatusCode.ABORTED:
                    raise StaleGradients(error.details()) from None
                if code not in TRANSIENT:
                    raise Refused(code, error.details()) from None
                wait = self._jitter.uniform(delay / 2, delay)
                log.warning("server %s: %s (%s); retrying in %.2fs", self.options.server, code.name, error.details(), wait)
                if self.stop.wait(wait):
                    raise Stopped() from None
                delay = min(delay * 2, self.options.max_backoff)

    def close(self) -> None:
        self.channel.close()
