"""The worker's side of the wire: typed calls with deadlines, retries with backoff, and errors a loop can act on."""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from collections.abc import Callable, Mapping, Sequence
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
    # The parameters at `version`, decoded; None when the worker is already current.
    weights: list[torch.Tensor] | None
    # The target network's version (value-based methods; else 0), and its parameters when fetched.
    target_version: int = 0
    target_weights: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class Update:
    """One push: gradients of the loss computed against base_version, and what the worker reports with them."""

    base_version: int
    sequence_number: int
    frames: int
    gradients: Sequence[torch.Tensor]
    episodes: Sequence[tuple[float, int]] = ()
    epsilons: Sequence[float] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)


class Connection(Protocol):
    """What the worker loop needs from a parameter server, over gRPC or (in benchmarks) in-process."""

    def register(self, name: str, num_envs: int, algorithm: int) -> pb.RegisterWorkerResponse: ...

    def pull(self, worker_id: int, have_version: int, have_target_version: int = -1) -> ServerReply: ...

    def push(self, worker_id: int, update: Update) -> ServerReply:
        """Applies the gradients; the reply carries the parameters after this update."""
        ...


class GrpcConnection:
    """A Connection to a remote server. Transient failures are retried with capped, jittered exponential backoff."""

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
        self.layout: list[pb.TensorSpec] = []
        self._jitter = random.Random(seed)

    def register(self, name: str, num_envs: int, algorithm: int) -> pb.RegisterWorkerResponse:
        request = pb.RegisterWorkerRequest(
            name=name, num_envs=num_envs, accepted_dtypes=list(tensors.TORCH_DTYPES), algorithm=algorithm
        )
        reply = self._call(self.stub.RegisterWorker, request)
        self.layout = list(reply.config.model.layout)
        return reply

    def pull(self, worker_id: int, have_version: int, have_target_version: int = -1) -> ServerReply:
        request = pb.PullWeightsRequest(
            worker_id=worker_id, have_version=have_version, dtype=self.dtype, have_target_version=have_target_version
        )
        return self._server_reply(self._call(self.stub.PullWeights, request))

    def push(self, worker_id: int, update: Update) -> ServerReply:
        request = pb.PushGradientsRequest(
            worker_id=worker_id,
            base_version=update.base_version,
            sequence_number=update.sequence_number,
            frames=update.frames,
            gradients=[tensors.encode(spec.name, g, self.dtype) for spec, g in zip(self.layout, update.gradients)],
            episodes=[pb.EpisodeResult(episode_return=r, length=n) for r, n in update.episodes],
            reply_weights_dtype=self.dtype,
            epsilons=update.epsilons,
            metrics=update.metrics,
        )
        return self._server_reply(self._call(self.stub.PushGradients, request))

    def _server_reply(self, reply: pb.PullWeightsResponse | pb.PushGradientsResponse) -> ServerReply:
        weights = tensors.decode_layout(reply.parameters, self.layout, "weights") if reply.parameters else None
        target_weights = None
        if isinstance(reply, pb.PullWeightsResponse) and reply.target_parameters:
            target_weights = tensors.decode_layout(reply.target_parameters, self.layout, "target weights")
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
        self.channel.close()
