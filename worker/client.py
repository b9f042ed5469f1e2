"""The worker's side of the wire: typed calls with deadlines, retries with backoff, and errors a loop can act on."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc
import torch

from asyncrl.common import tensors
from asyncrl.common.config import WorkerOptions
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Reply = TypeVar("Reply")

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


@dataclass(frozen=True)
class ServerReply:
    """What a pull or a push tells the worker."""

    version: int
    global_frames: int
    training_done: bool
    # The parameters at `version`, as one flat float32 vector in the layout; None when the worker is already current.
    weights: torch.Tensor | None
    # The target network's version (value-based methods; else 0), and its parameters when fetched.
    target_version: int = 0
    target_weights: torch.Tensor | None = None


@dataclass(frozen=True)
class Update:
    """One push: gradients of the loss computed against base_version, and what the worker reports with them."""

    base_version: int
    sequence_number: int
    frames: int
    gradients: torch.Tensor  # one flat float32 vector in the layout (asyncrl.common.tensors.FlatLayout)
    episodes: Sequence[tuple[float, int]] = ()
    epsilons: Sequence[float] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)


class PendingPush(Protocol):
    """A push on its way; result() waits for its reply (or raises what the call raised)."""

    def result(self) -> ServerReply: ...


@dataclass(frozen=True)
class AnsweredPush:
    """A push whose reply is already here."""

    reply: ServerReply

    def result(self) -> ServerReply:
        return self.reply


class Connection(Protocol):
    """What the worker loop needs from a parameter server, over gRPC or (in benchmarks) in-process."""

    def register(self, name: str, num_envs: int, algorithm: int) -> pb.RegisterWorkerResponse: ...

    def pull(self, worker_id: int, have_version: int, have_target_version: int = -1) -> ServerReply: ...

    def start_push(self, worker_id: int, update: Update) -> PendingPush:
        """Sends the gradients to be applied; the reply carries the parameters after this update.

        The update's gradients are read before this returns, so the caller may reuse their
        tensor at once; the caller collects the reply with result() when it needs it.
        """
        ...


class GrpcConnection:
    """A Connection to a remote server. Transient failures are retried with capped, jittered exponential backoff.

    A push's RPC runs on the connection's one push thread, so that the worker can collect
    its next rollout meanwhile; the tensor work stays in the calling thread (gradients are
    encoded in start_push, reply weights decoded in result()). Every torch call releases
    and retakes the GIL, and a push thread making them had to win the GIL back from the
    busy rollout loop each time: on CartPole that cost about 0.1 ms per update.
    """

    def __init__(self, options: WorkerOptions, stop: threading.Event, seed: int = 0) -> None:
        self.options = options
        self.stop = stop
        self.dtype = tensors.WIRE_DTYPES[options.dtype]
        max_bytes = int(options.max_message_mb * 2**20)
        self.channel = grpc.insecure_channel(
            options.server,
            options=[
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.max_receive_message_length", max_bytes),
                # gRPC's own reconnect backoff grows to 120 s; keep it within ours, so that a worker
                # reaches a restarted server about --max-backoff seconds after it is back.
                ("grpc.initial_reconnect_backoff_ms", min(1000, int(options.max_backoff * 1000))),
                ("grpc.max_reconnect_backoff_ms", int(options.max_backoff * 1000)),
            ],
        )
        self.stub = pb_grpc.ParameterServerServiceStub(self.channel)
        self.layout = tensors.FlatLayout(())
        self._jitter = random.Random(seed)
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push")

    def register(self, name: str, num_envs: int, algorithm: int) -> pb.RegisterWorkerResponse:
        request = pb.RegisterWorkerRequest(
            name=name, num_envs=num_envs, accepted_dtypes=list(tensors.TORCH_DTYPES), algorithm=algorithm
        )
        reply = self._call(self.stub.RegisterWorker, request)
        self.layout = tensors.FlatLayout(reply.config.model.layout)
        return reply

    def pull(self, worker_id: int, have_version: int, have_target_version: int = -1) -> ServerReply:
        request = pb.PullWeightsRequest(
            worker_id=worker_id, have_version=have_version, dtype=self.dtype, have_target_version=have_target_version
        )
        return self._server_reply(self._call(self.stub.PullWeights, request))

    def start_push(self, worker_id: int, update: Update) -> PendingPush:
        request = pb.PushGradientsRequest(
            worker_id=worker_id,
            base_version=update.base_version,
            sequence_number=update.sequence_number,
            frames=update.frames,
            gradients=self.layout.encode(update.gradients, self.dtype),
            episodes=[pb.EpisodeResult(episode_return=r, length=n) for r, n in update.episodes],
            reply_weights_dtype=self.dtype,
            epsilons=update.epsilons,
            metrics=update.metrics,
        )
        return _RemotePush(self._sender.submit(self._call, self.stub.PushGradients, request), self._server_reply)

    def _server_reply(self, reply: pb.PullWeightsResponse | pb.PushGradientsResponse) -> ServerReply:
        weights = self.layout.decode(reply.parameters, "weights") if reply.parameters else None
        target_weights = None
        if isinstance(reply, pb.PullWeightsResponse) and reply.target_parameters:
            target_weights = self.layout.decode(reply.target_parameters, "target weights")
        return ServerReply(
            reply.version, reply.global_frames, reply.training_done, weights, reply.target_version, target_weights
        )

    def _call(self, method: Callable[..., Reply], request: object) -> Reply:
        """One RPC with a deadline, retried on transient errors; NOT_FOUND and ABORTED become exceptions."""
        delay = 0.1
        while True:
            try:
                return method(request, timeout=self.options.rpc_deadline)
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    raise UnknownWorker(error.details()) from None
                if code == grpc.StatusCode.ABORTED:
                    raise StaleGradients(error.details()) from None
                if code not in TRANSIENT:
                    raise
                wait = self._jitter.uniform(delay / 2, delay)
                log.warning("server %s: %s (%s); retrying in %.2fs", self.options.server, code.name, error.details(), wait)
                if self.stop.wait(wait):
                    raise Stopped() from None
                delay = min(delay * 2, self.options.max_backoff)

    def close(self) -> None:
        """Closes the channel, which cancels a push in flight, and waits for the push thread to end."""
        self.channel.close()
        self._sender.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class _RemotePush:
    """A push whose RPC runs on the push thread; its reply is decoded in the thread that asks for it."""

    response: Future[pb.PushGradientsResponse]
    decode: Callable[[pb.PushGradientsResponse], ServerReply]

    def result(self) -> ServerReply:
        return self.decode(self.response.result())
