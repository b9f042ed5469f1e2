"""Serialized requests in, serialized replies out: the RPCs under a GrpcConnection, with retries.

A gRPC status ends here: a transient one is retried, any other becomes one of the outcomes of
asyncrl.worker.outcomes. This module does not import torch, so that the process
worker/rpc_process.py starts stays small.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable
from typing import Protocol

import grpc

from asyncrl.common.config import WorkerOptions
from asyncrl.common.security import client_channel
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.outcomes import CallFailed, Refused, StaleGradients, Stopped, UnknownWorker

log = logging.getLogger(__name__)

# Method paths are /<service>/<method>; the service's name comes from the generated descriptor, as the server's does.
SERVICE = f"/{pb.DESCRIPTOR.services_by_name['ParameterServerService'].full_name}/"

# Codes that mean "try the same call again later": the server is restarting, overloaded or far away.
# A server shutting down cancels calls that arrived but had no handler thread yet (CANCELLED); a retried
# push is applied at most once (same worker id and sequence number), so retrying those is safe too.
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


class Calls(Protocol):
    """RPCs by method name (RegisterWorker, PullWeights, PushGradients), on serialized messages.

    call() and the receivers start() returns raise the outcomes of asyncrl.worker.outcomes:
    UnknownWorker (NOT_FOUND), StaleGradients (ABORTED), Refused (any other code that is not
    transient), Stopped; transient failures are retried until the stop event is set. One call
    at a time: a call may start once the previous one's reply has been taken.
    """

    def call(self, method: str, request: bytes) -> bytes: ...

    def start(self, method: str, request: bytes) -> Callable[[], bytes]:
        """Sends the call on its way; the returned function waits for its reply."""
        ...

    def close(self) -> None: ...


class ChannelCalls:
    """Blocking calls on one channel, in the caller's thread, with capped, jittered exponential backoff.

    start() makes the whole call before it returns: the caller's thread is the only one, so
    nothing travels while the caller works (the RPC process, asyncrl.worker.rpc_process, is
    what overlaps them).
    """

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
                    raise UnknownWorker(error.details() or "") from None
                if code == grpc.StatusCode.ABORTED:
                    raise StaleGradients(error.details() or "") from None
                if code not in TRANSIENT:
                    raise Refused(code, error.details() or "") from None
                wait = self._jitter.uniform(delay / 2, delay)
                log.warning("server %s: %s (%s); retrying in %.2fs", self.options.server, code.name, error.details(), wait)
                if self.stop.wait(wait):
                    raise Stopped() from None
                delay = min(delay * 2, self.options.max_backoff)

    def start(self, method: str, request: bytes) -> Callable[[], bytes]:
        """Makes the whole call; its reply, or its outcome, is the returned function's, as with any Calls: a sharded
        push (GrpcConnection) starts every shard's call before it takes any outcome."""
        try:
            reply = self.call(method, request)
        except (CallFailed, Stopped) as outcome:
            return functools.partial(_raise, outcome)
        return lambda: reply

    def close(self) -> None:
        self.channel.close()


def _raise(outcome: Exception) -> bytes:
    raise outcome
