"""The worker's side of the wire: the messages of a pull and a push, built from and read into flat tensors.

The calls themselves, with their deadlines, retries and typed errors, are asyncrl.worker.calls';
the worker daemon makes them from a child process (asyncrl.worker.rpc_process).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from asyncrl.common import tensors
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.calls import Calls


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

    def register(self, name: str, num_envs: int, algorithm: int, evaluation: bool = False
                 ) -> pb.RegisterWorkerResponse: ...

    def pull(self, worker_id: int, have_version: int, have_target_version: int = -1) -> ServerReply: ...

    def start_push(self, worker_id: int, update: Update) -> PendingPush:
        """Sends the gradients to be applied; the reply carries the parameters after this update.

        The update's gradients are read before this returns, so the caller may reuse their
        tensor at once; the caller collects the reply with result() when it needs it.
        """
        ...


class GrpcConnection:
    """A Connection to a remote server: builds and reads the messages, in `dtype` (a wire dtype name); `calls`
    carries them.

    start_push encodes the gradients and serializes the request before it returns; the
    push's result() parses the reply and decodes its weights. The worker secret of the last
    registration goes with every pull and push: the server refuses a worker id without it.
    """

    def __init__(self, dtype: str, calls: Calls) -> None:
        self.dtype = tensors.WIRE_DTYPES[dtype]
        self.calls = calls
        self.layout = tensors.FlatLayout(())
        self.secret = b""

    def register(self, name: str, num_envs: int, algorithm: int, evaluation: bool = False
                 ) -> pb.RegisterWorkerResponse:
        request = pb.RegisterWorkerRequest(
            name=name, num_envs=num_envs, accepted_dtypes=list(tensors.TORCH_DTYPES), algorithm=algorithm,
            evaluation=evaluation,
        )
        reply = pb.RegisterWorkerResponse.FromString(self.calls.call("RegisterWorker", request.SerializeToString()))
        self.layout = tensors.FlatLayout(reply.config.model.layout)
        self.secret = reply.worker_secret
        return reply

    def pull(self, worker_id: int, have_version: int, have_target_version: int = -1) -> ServerReply:
        request = pb.PullWeightsRequest(
            worker_id=worker_id, have_version=have_version, dtype=self.dtype, have_target_version=have_target_version,
            worker_secret=self.secret,
        )
        return self._server_reply(
            pb.PullWeightsResponse.FromString(self.calls.call("PullWeights", request.SerializeToString()))
        )

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
            worker_secret=self.secret,
        )
        return _RemotePush(self.calls.start("PushGradients", request.SerializeToString()), self._server_reply)

    def report_evaluation(self, worker_id: int, version: int, episodes: Sequence[tuple[float, int]]
                          ) -> pb.ReportEvaluationResponse:
        """An evaluation worker's finished episodes, played with the weights of `version`."""
        request = pb.ReportEvaluationRequest(
            worker_id=worker_id, version=version, worker_secret=self.secret,
            episodes=[pb.EpisodeResult(episode_return=r, length=n) for r, n in episodes],
        )
        return pb.ReportEvaluationResponse.FromString(self.calls.call("ReportEvaluation", request.SerializeToString()))

    def _server_reply(self, reply: pb.PullWeightsResponse | pb.PushGradientsResponse) -> ServerReply:
        weights = self.layout.decode(reply.parameters, "weights") if reply.parameters else None
        target_weights = None
        if isinstance(reply, pb.PullWeightsResponse) and reply.target_parameters:
            target_weights = self.layout.decode(reply.target_parameters, "target weights")
        return ServerReply(
            reply.version, reply.global_frames, reply.training_done, weights, reply.target_version, target_weights
        )

    def close(self) -> None:
        self.calls.close()


@dataclass(frozen=True)
class _RemotePush:
    """A push on its way; its reply is parsed and decoded in the thread that asks for it."""

    receive: Callable[[], bytes]
    decode: Callable[[pb.PushGradientsResponse], ServerReply]

    def result(self) -> ServerReply:
        return self.decode(pb.PushGradientsResponse.FromString(self.receive()))
