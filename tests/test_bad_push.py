"""Refused pushes: each gets its status code and leaves parameters, version, T and the RMSProp statistics untouched.

Two servers with the same seed start from the same weights. Every good push goes to both; bad pushes go to
server A only. Whatever a bad push did to A's parameters or optimizer state would make A and B diverge at the
next good push, which the final test checks bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
import torch

from asyncrl.common import tensors
from asyncrl.v1 import parameter_server_pb2 as pb
from conftest import ServerProcess, pull

MAX_STALENESS = 2
FLAGS = ("--seed", "11", "--max-staleness", str(MAX_STALENESS), "--max-message-mb", "1", "--target-return", "none",
         "--checkpoint-interval", "0")
UNKNOWN_WORKER = 4242
OVERSIZED_BYTES = 2 * 2**20


@dataclass
class Side:
    """One server and the worker the test registered with it."""

    server: ServerProcess
    registration: pb.RegisterWorkerResponse

    @property
    def worker_id(self) -> int:
        return self.registration.worker_id

    @property
    def layout(self) -> list[pb.TensorSpec]:
        return list(self.registration.config.model.layout)

    @property
    def stub(self):
        return self.server.stub

    def raw_weights(self) -> tuple[int, int, list[tuple[str, list[int], int, bytes]]]:
        reply = pull(self.stub, self.registration)
        return reply.version, reply.global_frames, [(t.name, list(t.shape), t.dtype, t.data) for t in reply.parameters]


@dataclass
class Pair:
    """Server A (gets the bad pushes) and server B (good pushes only), kept in lockstep by good_push()."""

    a: Side
    b: Side
    next_sequence: int = 1
    good_pushes: int = 0

    def gradients(self, step: int, dtype: int = pb.DTYPE_FLOAT32) -> list[pb.Tensor]:
        generator = torch.Generator().manual_seed(step)
        named = [(s.name, 0.5 * torch.randn(tuple(s.shape), generator=generator)) for s in self.a.layout]
        return [tensors.encode(name, tensor, dtype) for name, tensor in named]

    def good_push(self, base_back: int = 0) -> pb.PushGradientsResponse:
        """Applies the same push (gradients, frames, base version) to both servers; returns A's reply."""
        self.good_pushes += 1
        replies = []
        for side in (self.a, self.b):
            version = side.stub.GetStatus(pb.GetStatusRequest(), timeout=10).version
            request = pb.PushGradientsRequest(
                worker_id=side.worker_id, base_version=version - base_back, sequence_number=self.next_sequence,
                frames=8, gradients=self.gradients(self.good_pushes), worker_secret=side.registration.worker_secret,
            )
            replies.append(side.stub.PushGradients(request, timeout=10))
        self.next_sequence += 1
        assert replies[0] == replies[1]
        return replies[0]

    def ensure_version(self, minimum: int) -> None:
        while self.a.stub.GetStatus(pb.GetStatusRequest(), timeout=10).version < minimum:
            self.good_push()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    servers = [ServerProcess(tmp_path_factory.mktemp(name), *FLAGS) for name in ("a", "b")]
    try:
        sides = []
        for server in servers:
            registration = server.stub.RegisterWorker(pb.RegisterWorkerRequest(name="bad-push", num_envs=1), timeout=10)
            sides.append(Side(server, registration))
        yield Pair(*sides)
    finally:
        for server in servers:
            server.stop()


# --- the bad pushes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a bad push is built from: a push that would be valid, piece by piece."""

    worker_id: int
    worker_secret: bytes
    sequence_number: int
    version: int
    gradients: list[pb.Tensor]

    def request(self, **overrides) -> pb.PushGradientsRequest:
        fields = dict(worker_id=self.worker_id, base_version=self.version, sequence_number=self.sequence_number,
                      frames=8, gradients=self.gradients, worker_secret=self.worker_secret)
        fields.update(overrides)
        return pb.PushGradientsRequest(**fields)

    def with_tensor(self, index: int, **changes) -> pb.PushGradientsRequest:
        """The valid push with gradient `index` changed (name, dtype, shape or data)."""
        gradients = [pb.Tensor(name=t.name, dtype=t.dtype, shape=list(t.shape), data=t.data) for t in self.gradients]
        changed = gradients[index]
        if "shape" in changes:
            del changed.shape[:]
            changed.shape.extend(changes.pop("shape"))
        for key, value in changes.items():
            setattr(changed, key, value)
        return self.request(gradients=gradients)


def _non_finite(value: float, dtype: int) -> Callable[[Context, Pair], pb.PushGradientsRequest]:
    def build(ctx: Context, pair: Pair) -> pb.PushGradientsRequest:
        generator = torch.Generator().manual_seed(77)
        named = [(s.name, 0.5 * torch.randn(tuple(s.shape), generator=generator)) for s in pair.a.layout]
        name, tensor = named[0]
        tensor.view(-1)[tensor.numel() // 2] = value  # one bad element in the middle of the first weight matrix
        return ctx.request(gradients=[tensors.encode(name, tensor, dtype) for name, tensor in named])
    return build


def _transposed(ctx: Context, pair: Pair) -> pb.PushGradientsRequest:
    index = next(i for i, s in enumerate(pair.a.layout) if len(s.shape) == 2 and s.shape[0] != s.shape[1])
    return ctx.with_tensor(index, shape=list(reversed(pair.a.layout[index].shape)))  # same element count


def _swapped(ctx: Context, pair: Pair) -> pb.PushGradientsRequest:
    gradients = list(ctx.gradients)
    gradients[0], gradients[1] = gradients[1], gradients[0]
    return ctx.request(gradients=gradients)


# (id, build, expected code). Every one is counted in updates_rejected.
BAD_PUSHES: list[tuple[str, Callable[[Context, Pair], pb.PushGradientsRequest], grpc.StatusCode]] = [
    ("unknown-worker", lambda ctx, pair: ctx.request(worker_id=UNKNOWN_WORKER), grpc.StatusCode.NOT_FOUND),
    ("no-tensors", lambda ctx, pair: ctx.request(gradients=[]), grpc.StatusCode.INVALID_ARGUMENT),
    ("one-tensor-short", lambda ctx, pair: ctx.request(gradients=ctx.gradients[:-1]), grpc.StatusCode.INVALID_ARGUMENT),
    ("one-tensor-extra", lambda ctx, pair: ctx.request(gradients=[*ctx.gradients, ctx.gradients[-1]]),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("wrong-name", lambda ctx, pair: ctx.with_tensor(0, name="not.a.parameter"), grpc.StatusCode.INVALID_ARGUMENT),
    ("swapped-order", _swapped, grpc.StatusCode.INVALID_ARGUMENT),
    ("transposed-shape", _transposed, grpc.StatusCode.INVALID_ARGUMENT),
    ("extra-dimension", lambda ctx, pair: ctx.with_tensor(0, shape=[1, *pair.a.layout[0].shape]),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("dtype-unspecified", lambda ctx, pair: ctx.with_tensor(0, dtype=pb.DTYPE_UNSPECIFIED),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("dtype-99", lambda ctx, pair: ctx.with_tensor(0, dtype=99), grpc.StatusCode.INVALID_ARGUMENT),
    ("bytes-short", lambda ctx, pair: ctx.with_tensor(0, data=ctx.gradients[0].data[:-1]),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("bytes-long", lambda ctx, pair: ctx.with_tensor(0, data=ctx.gradients[0].data + bytes(4)),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("bytes-empty", lambda ctx, pair: ctx.with_tensor(0, data=b""), grpc.StatusCode.INVALID_ARGUMENT),
    # float32 bytes labelled float16: the length is twice what the shape needs.
    ("float32-bytes-as-float16", lambda ctx, pair: ctx.with_tensor(0, dtype=pb.DTYPE_FLOAT16),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("nan-float32", _non_finite(float("nan"), pb.DTYPE_FLOAT32), grpc.StatusCode.INVALID_ARGUMENT),
    ("inf-float32", _non_finite(float("inf"), pb.DTYPE_FLOAT32), grpc.StatusCode.INVALID_ARGUMENT),
    ("nan-float16", _non_finite(float("nan"), pb.DTYPE_FLOAT16), grpc.StatusCode.INVALID_ARGUMENT),
    ("inf-float16", _non_finite(float("inf"), pb.DTYPE_FLOAT16), grpc.StatusCode.INVALID_ARGUMENT),
    ("neg-inf-bfloat16", _non_finite(float("-inf"), pb.DTYPE_BFLOAT16), grpc.StatusCode.INVALID_ARGUMENT),
    # 1e5 is finite in float32 but overflows float16 to +Inf when encoded.
    ("float16-overflow", _non_finite(1e5, pb.DTYPE_FLOAT16), grpc.StatusCode.INVALID_ARGUMENT),
    ("base-version-newer", lambda ctx, pair: ctx.request(base_version=ctx.version + 1),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("base-version-stale", lambda ctx, pair: ctx.request(base_version=ctx.version - MAX_STALENESS - 1),
     grpc.StatusCode.ABORTED),
    ("base-version-zero", lambda ctx, pair: ctx.request(base_version=0), grpc.StatusCode.ABORTED),
    ("negative-frames", lambda ctx, pair: ctx.request(frames=-1), grpc.StatusCode.INVALID_ARGUMENT),
    ("sequence-zero", lambda ctx, pair: ctx.request(sequence_number=0), grpc.StatusCode.INVALID_ARGUMENT),
    ("sequence-below-last", lambda ctx, pair: ctx.request(sequence_number=ctx.sequence_number - 2),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("nan-episode-return", lambda ctx, pair: ctx.request(episodes=[pb.EpisodeResult(episode_return=float("nan"),
                                                                                    length=10)]),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("reply-dtype-99", lambda ctx, pair: ctx.request(reply_weights_dtype=99), grpc.StatusCode.INVALID_ARGUMENT),
]

# Over the server's 1 MiB limit: gRPC refuses these before the service sees them (so they are not counted).
OVERSIZED: list[tuple[str, Callable[[Context, Pair], pb.PushGradientsRequest]]] = [
    ("oversized-gradient", lambda ctx, pair: ctx.with_tensor(
        0, shape=[OVERSIZED_BYTES // 4], data=bytes(OVERSIZED_BYTES))),
    # Valid in every other respect: applied, were it not for its size.
    ("oversized-episodes", lambda ctx, pair: ctx.request(
        episodes=[pb.EpisodeResult(episode_return=1.0, length=1)] * (OVERSIZED_BYTES // 10))),
]


def context(pair: Pair) -> Context:
    # A version at which stale and "lower sequence" pushes are expressible, with a valid push as the baseline.
    pair.ensure_version(MAX_STALENESS + 2)
    version = pair.a.stub.GetStatus(pb.GetStatusRequest(), timeout=10).version
    return Context(pair.a.worker_id, pair.a.registration.worker_secret, pair.next_sequence, version, pair.gradients(10_000 + version))


def refuse(pair: Pair, request: pb.PushGradientsRequest, code: grpc.StatusCode, counted: bool = True) -> grpc.RpcError:
    """Pushes `request` to server A, expects `code`, and checks that nothing but the rejection count changed."""
    before = pair.a.raw_weights()
    status_before = pair.a.server.status()
    with pytest.raises(grpc.RpcError) as raised:
        pair.a.stub.PushGradients(request, timeout=30)
    assert raised.value.code() == code, raised.value.details()
    after = pair.a.raw_weights()
    assert after[:2] == before[:2]  # version and T
    assert after[2] == before[2]  # names, shapes, dtypes and raw bytes
    status_after = pair.a.server.status()
    assert status_after.updates_applied == status_before.updates_applied
    assert status_after.updates_rejected == status_before.updates_rejected + (1 if counted else 0)
    (worker,) = [w for w in status_after.workers if w.worker_id == pair.a.worker_id]
    (worker_before,) = [w for w in status_before.workers if w.worker_id == pair.a.worker_id]
    assert worker.pushes_applied == worker_before.pushes_applied
    return raised.value


# --- tests -------------------------------------------------------------------------------------------------------


def test_servers_start_identical(pair: Pair) -> None:
    """The premise of the optimizer-state check: two servers with the same --seed pull bit-identical weights."""
    pair.good_push()
    assert pair.a.raw_weights() == pair.b.raw_weights()


@pytest.mark.parametrize(("build", "code"), [(b, c) for _, b, c in BAD_PUSHES], ids=[i for i, _, _ in BAD_PUSHES])
def test_bad_push_is_refused_without_effect(pair: Pair, build, code: grpc.StatusCode) -> None:
    """The bad push gets its status code, the parameters stay bit-identical and updates_rejected rises by one."""
    ctx = context(pair)
    refuse(pair, build(ctx, pair), code)
    # The same worker carries on with the sequence number the refused push used.
    pair.good_push()


def test_stale_push_reports_current_version(pair: Pair) -> None:
    """A too-stale push is ABORTED with the current version in the message and the trailing metadata."""
    ctx = context(pair)
    error = refuse(pair, ctx.request(base_version=0), grpc.StatusCode.ABORTED)
    current = pair.a.server.status().version
    assert current > MAX_STALENESS
    metadata = dict(error.trailing_metadata() or ())
    assert metadata.get("asyncrl-current-version") == str(current)
    assert f"current version {current}" in error.details()


def test_push_at_max_staleness_is_accepted(pair: Pair) -> None:
    """A push exactly --max-staleness versions behind is still applied (only older ones are refused)."""
    pair.ensure_version(MAX_STALENESS + 1)
    before = pair.a.server.status()
    reply = pair.good_push(base_back=MAX_STALENESS)
    assert reply.version == before.version + 1


@pytest.mark.parametrize("build", [b for _, b in OVERSIZED], ids=[i for i, _ in OVERSIZED])
def test_oversized_push_is_refused_and_server_keeps_serving(pair: Pair, build) -> None:
    """A push over --max-message-mb gets RESOURCE_EXHAUSTED, changes nothing, and the server serves on."""
    ctx = context(pair)
    request = build(ctx, pair)
    assert request.ByteSize() > 2**20
    refuse(pair, request, grpc.StatusCode.RESOURCE_EXHAUSTED, counted=False)
    reply = pair.good_push()  # pushes, pulls and status still work
    assert reply.version == ctx.version + 1
    assert len(pull(pair.a.stub, pair.a.registration).parameters) == len(pair.a.layout)


def test_bad_pushes_leave_optimizer_state_intact(pair: Pair) -> None:
    """After every bad push on A and one good push G on both, A and B hold bit-identical parameters."""
    pair.ensure_version(MAX_STALENESS + 2)
    start = pair.a.raw_weights()
    assert start == pair.b.raw_weights()
    for _, build, code in BAD_PUSHES:
        refuse(pair, build(context(pair), pair), code)
    for _, build in OVERSIZED:
        refuse(pair, build(context(pair), pair), grpc.StatusCode.RESOURCE_EXHAUSTED, counted=False)
    assert pair.a.raw_weights() == start
    reply = pair.good_push()  # G; asserts both servers answer alike
    assert reply.version == start[0] + 1
    final_a, final_b = pair.a.raw_weights(), pair.b.raw_weights()
    assert final_a[2] != start[2]  # G really moved the weights, so a touched RMSProp state would show
    assert final_a == final_b
    status_a, status_b = pair.a.server.status(), pair.b.server.status()
    assert (status_a.version, status_a.global_frames, status_a.updates_applied) == (
        status_b.version, status_b.global_frames, status_b.updates_applied)
    assert status_b.updates_rejected == 0
    assert status_a.updates_rejected >= len(BAD_PUSHES)
