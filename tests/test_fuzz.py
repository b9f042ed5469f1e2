"""Property-based fuzzing of the boundary: arbitrary field values against one real server.

Requests built from the extremes of every integer type, NaN and Inf, huge repeated fields
(within the message limit), random names, shapes and bytes, mixed with values that are
valid, so that both refusals and applied pushes occur. The properties: no call is answered
UNKNOWN or INTERNAL, only documented statuses occur, the server stays up, and a refused
call changes nothing (the pulled weights and GetStatus are identical but for the rejection
count). Derandomized with a fixed budget, so every run tries the same examples. Each example
makes one call of each kind a worker makes: RegisterWorker (training or evaluation),
PullWeights and PushGradients (whole or sliced) and ReportEvaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncrl.common import tensors
from asyncrl.v1 import parameter_server_pb2 as pb
from conftest import ServerProcess

FLAGS = ("--seed", "9", "--target-return", "none", "--checkpoint-interval", "0", "--max-message-mb", "16")
DOCUMENTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ABORTED,
              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED}
FUZZ = settings(max_examples=100, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _integers(bits: int, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    extremes = sorted({low, high, 0, 1, -1 if signed else 2, high // 2, low + 1, high - 1})
    return st.one_of(st.sampled_from(extremes), st.integers(-2, 40).filter(lambda v: low <= v <= high),
                     st.integers(low, high))


INT32, INT64, UINT32, UINT64 = _integers(32, True), _integers(64, True), _integers(32, False), _integers(64, False)
DOUBLES = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 0.0, 1e9, 1.5e12]),
                    st.floats(allow_nan=True, allow_infinity=True))
FLOATS = st.one_of(st.sampled_from([float("nan"), float("inf"), 0.0, 0.5, 1.0, -0.0, 3.4e38]),
                   st.floats(width=32, allow_nan=True, allow_infinity=True))
SECRETS = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\x00" * 32]))
NAMES = st.one_of(st.text(max_size=200), st.sampled_from(["", "x" * 128, "x" * 129, "y" * 2**20, "tab\there"]))
# Repeated fields: a few entries, or very many (one value repeated, so the example stays cheap to draw).
COUNTS = st.sampled_from([0, 1, 2, 3, 17, 1000, 200_000])


def _repeated(values: st.SearchStrategy) -> st.SearchStrategy[list]:
    return st.one_of(st.lists(values, max_size=4), st.builds(lambda n, v: [v] * n, COUNTS, values))


@dataclass
class Target:
    """The fuzzed server, a valid worker and a valid evaluation worker on it, and the worker's last applied sequence
    number."""

    server: ServerProcess
    worker_id: int
    secret: bytes
    layout: list[pb.TensorSpec]
    evaluator_id: int
    evaluator_secret: bytes
    last_sequence: int = 0


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(tmp_path_factory.mktemp("fuzz"), *FLAGS)
    try:
        registration = server.stub.RegisterWorker(pb.RegisterWorkerRequest(name="fuzz", num_envs=2), timeout=10)
        evaluator = server.stub.RegisterWorker(pb.RegisterWorkerRequest(name="fuzz-eval", num_envs=1, evaluation=True),
                                               timeout=10)
        yield Target(server, registration.worker_id, registration.worker_secret, list(registration.config.model.layout),
                     evaluator.worker_id, evaluator.worker_secret)
    finally:
        server.stop()


def observed(target: Target) -> tuple[bytes, pb.GetStatusResponse]:
    """The weights and GetStatus; both valid workers call first, so that a refused call of either (which marks it
    alive) cannot move them in GetStatus's list of the most recently seen."""
    weights = target.server.stub.PullWeights(
        pb.PullWeightsRequest(worker_id=target.worker_id, have_version=-1, have_target_version=-1,
                              worker_secret=target.secret), timeout=30)
    target.server.stub.PullWeights(pb.PullWeightsRequest(worker_id=target.evaluator_id, have_version=-1,
                                                         worker_secret=target.evaluator_secret), timeout=30)
    status = target.server.status()
    for field in ("uptime_seconds", "frames_per_second", "updates_per_second"):
        status.ClearField(field)
    for worker in status.workers:
        worker.ClearField("seconds_since_last_seen")
        worker.ClearField("alive")
    return weights.SerializeToString(), status


def check_call(target: Target, method: str, request) -> object | None:
    """Makes the call; a refusal must be documented and leave everything but the rejection count as it was."""
    weights_before, status_before = observed(target)
    try:
        return getattr(target.server.stub, method)(request, timeout=60)
    except grpc.RpcError as error:
        assert error.code() in DOCUMENTED, (method, error.code(), error.details())
        weights_after, status_after = observed(target)
        assert weights_after == weights_before, method
        assert status_after.updates_rejected >= status_before.updates_rejected
        status_after.updates_rejected = status_before.updates_rejected
        assert status_after == status_before, method
        return None
    finally:
        assert target.server.popen.poll() is None, target.server.log()[-3000:]


# --- requests ---------------------------------------------------------------------------------------------------


@st.composite
def fields(draw: st.DrawFn, valid: dict, arbitrary: dict[str, st.SearchStrategy]) -> dict:
    """A valid request's fields with a few of them (none, sometimes) replaced by arbitrary values."""
    names = st.sampled_from(sorted(arbitrary))
    corrupted = draw(st.one_of(names.map(lambda name: {name}), st.sets(names, max_size=3)))
    return {name: draw(arbitrary[name]) if name in corrupted else value for name, value in valid.items()}


def registrations() -> st.SearchStrategy[pb.RegisterWorkerRequest]:
    arbitrary = dict(name=NAMES, num_envs=INT32, accepted_dtypes=_repeated(INT32), algorithm=INT32,
                     evaluation=st.booleans())
    valid = dict(name="fuzzed", num_envs=1, accepted_dtypes=[pb.DTYPE_FLOAT32], algorithm=pb.ALGORITHM_A3C,
                 evaluation=False)
    return fields(valid, arbitrary).map(lambda f: pb.RegisterWorkerRequest(**f))


def pulls(target: Target) -> st.SearchStrategy[pb.PullWeightsRequest]:
    arbitrary = dict(worker_id=UINT32, have_version=INT64, dtype=INT32, have_target_version=INT64, worker_secret=SECRETS,
                     sliced=st.booleans())
    valid = dict(worker_id=target.worker_id, have_version=-1, dtype=pb.DTYPE_FLOAT16, have_target_version=-1,
                 worker_secret=target.secret, sliced=False)
    return fields(valid, arbitrary).map(lambda f: pb.PullWeightsRequest(**f))


@st.composite
def random_tensors(draw: st.DrawFn) -> pb.Tensor:
    return pb.Tensor(name=draw(NAMES), dtype=draw(INT32), shape=draw(st.lists(INT64, max_size=4)),
                     data=draw(st.binary(max_size=512)))


def pushes(target: Target) -> st.SearchStrategy[pb.PushGradientsRequest]:
    """The target worker's next push, valid, with a few fields arbitrary."""
    nan_gradients = [pb.Tensor(name=s.name, dtype=pb.DTYPE_FLOAT32, shape=list(s.shape), data=b"\xff" * (4 * _elements(s)))
                     for s in target.layout]
    # The whole flat gradient as one tensor: what a push with `sliced` set carries to a server of one process.
    one_slice = [tensors.encode("slice", torch.full((sum(_elements(s) for s in target.layout),), 0.01))]
    arbitrary = dict(
        worker_id=UINT32, base_version=INT64, sequence_number=UINT64, frames=INT64,
        gradients=st.one_of(st.lists(random_tensors(), max_size=len(target.layout) + 1), st.just(nan_gradients),
                            st.just(one_slice)),
        episodes=_repeated(st.builds(lambda r, n: pb.EpisodeResult(episode_return=r, length=n), DOUBLES, INT64)),
        reply_weights_dtype=INT32, epsilons=_repeated(FLOATS),
        metrics=st.dictionaries(st.one_of(st.just("losses/entropy"), NAMES), DOUBLES, max_size=3),
        worker_secret=SECRETS, sliced=st.booleans(), gradient_norm=DOUBLES,
    )
    valid = dict(
        worker_id=target.worker_id, base_version=target.server.status().version,
        sequence_number=target.last_sequence + 1, frames=20,
        gradients=[tensors.encode(s.name, torch.full(tuple(s.shape), 0.01)) for s in target.layout],
        episodes=[pb.EpisodeResult(episode_return=1.0, length=9)], reply_weights_dtype=pb.DTYPE_FLOAT32,
        epsilons=[0.5, 0.1], metrics={"losses/entropy": 0.5}, worker_secret=target.secret, sliced=False,
        gradient_norm=0.0,
    )
    return fields(valid, arbitrary).map(lambda f: pb.PushGradientsRequest(**f))


def evaluation_reports(target: Target) -> st.SearchStrategy[pb.ReportEvaluationRequest]:
    """The evaluation worker's next report, valid, with a few fields arbitrary."""
    arbitrary = dict(
        worker_id=UINT32, version=INT64, worker_secret=SECRETS,
        episodes=_repeated(st.builds(lambda r, n: pb.EpisodeResult(episode_return=r, length=n), DOUBLES, INT64)),
    )
    valid = dict(worker_id=target.evaluator_id, version=target.server.status().version,
                 episodes=[pb.EpisodeResult(episode_return=3.0, length=9)], worker_secret=target.evaluator_secret)
    return fields(valid, arbitrary).map(lambda f: pb.ReportEvaluationRequest(**f))


def _elements(spec: pb.TensorSpec) -> int:
    count = 1
    for dimension in spec.shape:
        count *= dimension
    return count


# --- properties -------------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzzed_requests_get_only_documented_statuses_and_refusals_change_nothing(target: Target, data) -> None:
    check_call(target, "RegisterWorker", data.draw(registrations()))
    check_call(target, "PullWeights", data.draw(pulls(target)))
    request = data.draw(pushes(target))
    if check_call(target, "PushGradients", request) is not None and request.worker_id == target.worker_id:
        target.last_sequence = request.sequence_number
    check_call(target, "ReportEvaluation", data.draw(evaluation_reports(target)))
    status = target.server.status()
    assert 0 <= status.global_frames < 2**63
