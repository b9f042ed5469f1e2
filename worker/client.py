"""The worker's side of the wire: the messages of a pull and a push, built from and read into flat tensors.

A server of one process takes the model's tensors; a sharded one (docs/sharding.md) takes
each shard's slice of the flat vector at that shard, so a pull and a push fan out to every
shard at once and their replies are gathered. Versions, target versions and sequence numbers
are per shard, and the sequence numbers are this module's alone: the worker sees a version
per shard (`Versions`) and pieces of the flat vector, never a shard's address.

The calls themselves, with their deadlines and retries, are asyncrl.worker.calls'; the worker
daemon makes them from child processes (asyncrl.worker.rpc_process), one per shard. How a
call can fail is asyncrl.worker.outcomes'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from asyncrl.common import tensors
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.calls import Calls
from asyncrl.worker.outcomes import CallFailed

Versions = tuple[int, ...]  # a version per shard, shard 0 first: one entry for a server of one process
# Part of the flat vector: (offset, values); a reply carries the pieces of the shards whose version changed.
Piece = tuple[int, torch.Tensor]


@dataclass(frozen=True)
class ServerReply:
    """What a pull or a push tells the worker."""

    versions: Versions
    global_frames: int  # T, as shard 0 counts it
    training_done: bool
    weights: tuple[Piece, ...] = ()  # the parameters at `versions`, where the worker's are older; () when current
    # The target network's versions (value-based methods; else 0s), and its parameters where fetched.
    target_versions: Versions = ()
    target_weights: tuple[Piece, ...] = ()


def load(flat: torch.Tensor, pieces: Sequence[Piece]) -> None:
    """Copies a reply's pieces into their places in a flat vector."""
    for offset, values in pieces:
        flat[offset:offset + values.numel()].copy_(values)


@dataclass(frozen=True)
class Update:
    """One push: gradients of the loss computed against base_versions, and what the worker reports with them."""

    base_versions: Versions
    frames: int
    gradients: torch.Tensor  # one flat float32 vector in the layout (asyncrl.common.tensors.FlatLayout)
    episodes: Sequence[tuple[float, int]] = ()
    epsilons: Sequence[float] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)


class PendingPush(Protocol):
    """A push on its way; result() waits for its reply (or raises the call's outcome)."""

    def result(self) -> ServerReply: ...


@dataclass(frozen=True)
class AnsweredPush:
    """A push whose reply is already here."""

    reply: ServerReply

    def result(self) -> ServerReply:
        return self.reply


class Connection(Protocol):
    """What the worker loop needs from a parameter server, over gRPC or (in benchmarks) in-process.

    A version of None (a worker with no weights, or one that must fetch them all again) pulls
    everything.
    """

    def register(self, name: str, num_envs: int, algorithm: int, evaluation: bool = False
                 ) -> pb.RegisterWorkerResponse: ...

    def pull(self, worker_id: int, have: Versions | None, have_target: Versions | None = None) -> ServerReply: ...

    def start_push(self, worker_id: int, update: Update) -> PendingPush:
        """Sends the gradients to be applied; the reply carries the parameters after this update.

        The update's gradients are read before this returns, so the caller may reuse their
        tensor at once; the caller collects the reply with result() when it needs it.
        """
        ...


@dataclass
class _Shard:
    """One shard as the worker sees it: its calls, its place in the flat vector and its last applied push."""

    calls: Calls
    layout: tensors.FlatLayout  # the model's (a server of one process) or the one tensor of a slice
    offset: int
    sliced: bool
    applied: int = 0  # the sequence number of this worker's last push the shard applied

    @property
    def length(self) -> int:
        return self.layout.total


class GrpcConnection:
    """A Connection to a remote server of one process or of K shards: builds and reads the messages, in `dtype`
    (a wire dtype name).

    `calls` reaches the server registered with (shard 0); `connect` makes the calls to another
    shard's address, kept across registrations. The worker secret of the last registration
    goes with every pull and push: every shard refuses a worker id without it. start_push
    encodes and serializes every shard's request before it returns; result() waits for all of
    them, then decodes.
    """

    def __init__(self, dtype: str, calls: Calls, connect: Callable[[str], Calls] | None = None) -> None:
        self.dtype = tensors.WIRE_DTYPES[dtype]
        self.calls = calls
        self.connect = connect
        self.layout = tensors.FlatLayout(())
        self.secret = b""
        self.shards: list[_Shard] = []
        self._other_shards: dict[str, Calls] = {}  # by address

    def register(self, name: str, num_envs: int, algorithm: int, evaluation: bool = False
                 ) -> pb.RegisterWorkerResponse:
        request = pb.RegisterWorkerRequest(
            name=name, num_envs=num_envs, accepted_dtypes=list(tensors.TORCH_DTYPES), algorithm=algorithm,
            evaluation=evaluation,
        )
        reply = pb.RegisterWorkerResponse.FromString(self.calls.call("RegisterWorker", request.SerializeToString()))
        self.layout = tensors.FlatLayout(reply.config.model.layout)
        self.secret = reply.worker_secret
        if len(reply.shards) <= 1:
            self.shards = [_Shard(self.calls, self.layout, 0, sliced=False)]
        else:
            self.shards = [_Shard(self._shard_calls(i, info.address), tensors.slice_layout(info.length), info.offset,
                                  sliced=True) for i, info in enumerate(reply.shards)]
        return reply

    def _shard_calls(self, index: int, address: str) -> Calls:
        if index == 0:
            return self.calls
        if self.connect is None:
            raise CallFailed(f"the server is sharded, but this connection reaches only one address (shard {index}: "
                             f"{address})")
        if address not in self._other_shards:
            self._other_shards[address] = self.connect(address)
        return self._other_shards[address]

    @property
    def sharded(self) -> bool:
        return len(self.shards) > 1

    def pull(self, worker_id: int, have: Versions | None, have_target: Versions | None = None) -> ServerReply:
        receivers = []
        for index, shard in enumerate(self.shards):
            request = pb.PullWeightsRequest(
                worker_id=worker_id, have_version=have[index] if have else -1, dtype=self.dtype,
                have_target_version=have_target[index] if have_target else -1, worker_secret=self.secret,
                sliced=shard.sliced,
            )
            receivers.append(shard.calls.start("PullWeights", request.SerializeToString()))
        replies, failure = _gather(receivers)
        if failure is not None:
            raise failure
        return self._server_reply([pb.PullWeightsResponse.FromString(reply) for reply in replies])

    def start_push(self, worker_id: int, update: Update) -> PendingPush:
        """Every shard's slice of the gradients, with the whole gradient's norm where sliced; the episodes, epsilons
        and metrics go to shard 0 only."""
        converted = update.gradients.detach().to(tensors.TORCH_DTYPES[self.dtype])  # once, for every shard
        norm = tensors.flat_norm(converted.to(torch.float32)) if self.sharded else 0.0  # as the shards decode it
        receivers = []
        for index, shard in enumerate(self.shards):
            request = pb.PushGradientsRequest(
                worker_id=worker_id,
                base_version=update.base_versions[index],
                sequence_number=shard.applied + 1,
                frames=update.frames,
                gradients=shard.layout.encode(converted[shard.offset:shard.offset + shard.length], self.dtype),
                reply_weights_dtype=self.dtype,
                worker_secret=self.secret,
                sliced=shard.sliced,
                gradient_norm=norm,
            )
            if index == 0:
                request.episodes.extend(pb.EpisodeResult(episode_return=r, length=n) for r, n in update.episodes)
                request.epsilons.extend(update.epsilons)
                request.metrics.update(update.metrics)
            receivers.append(shard.calls.start("PushGradients", request.SerializeToString()))
        return _RemotePush(self, receivers)

    def _push_result(self, receivers: list[Callable[[], bytes]]) -> ServerReply:
        """Each shard that answered applied the push (or had: a retry); the first refusal is raised after all replied.

        With shards, shard 0 may have taken a push's episodes while another shard refused it:
        the outcome then says so (episodes_taken), so that the worker does not send them again.
        """
        replies, failure = _gather(receivers)
        for shard, reply in zip(self.shards, replies):
            if reply is not None:
                shard.applied += 1
        if failure is not None:
            failure.episodes_taken = replies[0] is not None
            raise failure
        return self._server_reply([pb.PushGradientsResponse.FromString(reply) for reply in replies])

    def report_evaluation(self, worker_id: int, version: int, episodes: Sequence[tuple[float, int]]
                          ) -> pb.ReportEvaluationResponse:
        """An evaluation worker's finished episodes, played with the weights of shard 0's `version`."""
        request = pb.ReportEvaluationRequest(
            worker_id=worker_id, version=version, worker_secret=self.secret,
            episodes=[pb.EpisodeResult(episode_return=r, length=n) for r, n in episodes],
        )
        return pb.ReportEvaluationResponse.FromString(self.calls.call("ReportEvaluation", request.SerializeToString()))

    def _server_reply(self, replies: Sequence[pb.PullWeightsResponse | pb.PushGradientsResponse]) -> ServerReply:
        weights, targets = [], []
        for shard, reply in zip(self.shards, replies):
            if reply.parameters:
                weights.append((shard.offset, shard.layout.decode(reply.parameters, "weights")))
            if isinstance(reply, pb.PullWeightsResponse) and reply.target_parameters:
                targets.append((shard.offset, shard.layout.decode(reply.target_parameters, "target weights")))
        first = replies[0]
        return ServerReply(
            tuple(reply.version for reply in replies), first.global_frames, first.training_done, tuple(weights),
            tuple(reply.target_version for reply in replies), tuple(targets),
        )

    def close(self) -> None:
        for calls in [self.calls, *self._other_shards.values()]:
            calls.close()


def _gather(receivers: Sequence[Callable[[], bytes]]) -> tuple[list[bytes | None], CallFailed | None]:
    """Every receiver's reply (None where it failed) and the first failure: each call's reply is taken, so every
    shard's calls are free for the next one whatever the others did."""
    replies: list[bytes | None] = []
    failure: CallFailed | None = None
    for receive in receivers:
        try:
            replies.append(receive())
        except CallFailed as error:
            replies.append(None)
            failure = failure or error
    return replies, failure


@dataclass(frozen=True)
class _RemotePush:
    """A push on its way to every shard; its replies are gathered and decoded in the thread that asks for them."""

    connection: GrpcConnection
    receivers: list[Callable[[], bytes]]

    def result(self) -> ServerReply:
        return self.connection._push_result(self.receivers)
