"""The network boundary: every request field out of its documented bound is refused and changes nothing.

One real server on 127.0.0.1, reached through the generated stubs. After each refusal the
weights a pull returns are byte-identical and GetStatus is identical but for the rejection
count (and the clocks), so no refused request can move T, the version, the parameters or
what the server reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import torch

from asyncrl.common import limits, tensors
from asyncrl.common.config import RunConfig, ServerOptions
from asyncrl.common.wire import model_spec, run_config_message
from asyncrl.server.app import build_run, create_server
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc
from conftest import ServerProcess, code_of

FLAGS = ("--seed", "5", "--target-return", "none", "--checkpoint-interval", "0")
INVALID = grpc.StatusCode.INVALID_ARGUMENT
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
# CartPole A3C with t_max 5 and one env copy: 2 x 1 x 5 x 1 frames, and as many episodes.
MOST_FRAMES = 10
MOST_EPISODES = 10
PUSH_PATH = "/asyncrl.v1.ParameterServerService/PushGradients"


class Pusher:
    """A worker of one env copy on the test side: its id, layout and the sequence number of its next push."""

    def __init__(self, server: ServerProcess, num_envs: int = 1) -> None:
        self.server = server
        registration = server.stub.RegisterWorker(pb.RegisterWorkerRequest(name="boundary", num_envs=num_envs),
                                                  timeout=10)
        self.worker_id = registration.worker_id
        self.secret = registration.worker_secret
        self.layout = list(registration.config.model.layout)
        self.last_sequence = 0

    def request(self, **overrides) -> pb.PushGradientsRequest:
        """A valid next push, but for overrides."""
        generator = torch.Generator().manual_seed(self.last_sequence)
        fields = dict(
            worker_id=self.worker_id, base_version=self.server.status().version,
            sequence_number=self.last_sequence + 1, frames=5, worker_secret=self.secret,
            gradients=[tensors.encode(s.name, 0.1 * torch.randn(tuple(s.shape), generator=generator))
                       for s in self.layout],
        )
        fields.update(overrides)
        return pb.PushGradientsRequest(**fields)

    def push(self, request: pb.PushGradientsRequest) -> pb.PushGradientsResponse:
        reply = self.server.stub.PushGradients(request, timeout=30)
        self.last_sequence = request.sequence_number
        return reply


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    process = ServerProcess(tmp_path_factory.mktemp("boundary"), *FLAGS)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def pusher(server: ServerProcess) -> Pusher:
    pusher = Pusher(server)
    pusher.push(pusher.request())  # T and the weights are past their initial values
    return pusher


def observed(server: ServerProcess, worker: Pusher) -> tuple[bytes, pb.GetStatusResponse]:
    """The full weights a pull returns, as bytes, and GetStatus without its clocks and rates."""
    weights = server.stub.PullWeights(
        pb.PullWeightsRequest(worker_id=worker.worker_id, have_version=-1, worker_secret=worker.secret), timeout=10)
    status = server.status()
    status.ClearField("uptime_seconds")
    status.ClearField("frames_per_second")
    status.ClearField("updates_per_second")
    for worker in status.workers:
        worker.ClearField("seconds_since_last_seen")
        worker.ClearField("alive")
    return weights.SerializeToString(), status


def refuse(server: ServerProcess, worker: Pusher, call: Callable[[], object], code: grpc.StatusCode = INVALID,
           counted: bool = True) -> grpc.RpcError:
    """Makes call, expects code, and checks that nothing but the push rejection count changed."""
    weights_before, status_before = observed(server, worker)
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == code, raised.value.details()
    weights_after, status_after = observed(server, worker)
    assert weights_after == weights_before
    assert status_after.updates_rejected == status_before.updates_rejected + (1 if counted else 0)
    status_after.updates_rejected = status_before.updates_rejected
    assert status_after == status_before
    return raised.value


def refuse_push(pusher: Pusher, code: grpc.StatusCode = INVALID, **overrides) -> grpc.RpcError:
    request = pusher.request(**overrides)
    return refuse(pusher.server, pusher, lambda: pusher.server.stub.PushGradients(request, timeout=30), code)


def progress_lines(server: ServerProcess) -> int:
    return server.log().count(" T=")


# --- finding 1: frames ------------------------------------------------------------------------------------------


def test_frames_that_would_overflow_t_are_refused_and_the_server_serves_on(server: ServerProcess, pusher: Pusher):
    """frames = 2**63 - 1 after a valid push: INVALID_ARGUMENT, and pulls, pushes, status and the progress loop go on."""
    lines_before = progress_lines(server)
    error = refuse_push(pusher, frames=2**63 - 1)
    assert "frames must be in 0..10" in error.details()
    before = server.status()
    reply = pusher.push(pusher.request())
    assert (reply.version, reply.global_frames) == (before.version + 1, before.global_frames + 5)
    deadline = time.monotonic() + 60
    while progress_lines(server) <= lines_before and time.monotonic() < deadline:  # one every 10 s
        time.sleep(0.5)
    assert progress_lines(server) > lines_before, server.log()[-2000:]
    assert server.popen.poll() is None
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("frames", [2**62, MOST_FRAMES + 1, -1, -(2**63)],
                         ids=["2**62", "one-over-the-bound", "negative", "int64-min"])
def test_frames_outside_the_workers_bound_are_refused(pusher: Pusher, frames: int):
    """2**62 would end the run for every worker; the bound is twice one rollout of the registered copies."""
    refuse_push(pusher, frames=frames)


def test_frames_at_the_bound_are_applied(server: ServerProcess, pusher: Pusher):
    before = server.status()
    reply = pusher.push(pusher.request(frames=MOST_FRAMES))
    assert reply.global_frames == before.global_frames + MOST_FRAMES


# --- finding 2: sequence numbers -------------------------------------------------------------------------------


BAD_SEQUENCES: list[tuple[str, Callable[[int], int]]] = [
    ("2**64-1", lambda last: 2**64 - 1), ("last+2", lambda last: last + 2), ("last-1", lambda last: last - 1),
    ("zero", lambda last: 0),
]


@pytest.mark.parametrize("number", [n for _, n in BAD_SEQUENCES], ids=[i for i, _ in BAD_SEQUENCES])
def test_sequence_numbers_other_than_last_plus_one_are_refused(pusher: Pusher, number: Callable[[int], int]):
    """Only last + 1 (a new push) or last (a retry) is accepted; 2**64 - 1 no longer locks the worker out."""
    refuse_push(pusher, sequence_number=number(pusher.last_sequence))
    reply = pusher.push(pusher.request())  # the worker's next real push is applied
    assert reply.version > 0


def test_sequence_number_sent_as_the_varint_of_minus_one_is_refused(server: ServerProcess, pusher: Pusher):
    """The 10-byte varint a client writes for -1 reads as 2**64 - 1: refused like it."""
    request = pusher.request()
    request.ClearField("sequence_number")
    raw = request.SerializeToString() + b"\x18" + b"\xff" * 9 + b"\x01"  # field 3, varint
    assert pb.PushGradientsRequest.FromString(raw).sequence_number == 2**64 - 1
    send = server.channel.unary_unary(PUSH_PATH)
    refuse(server, pusher, lambda: send(raw, timeout=30))
    pusher.push(pusher.request())


def test_a_retry_of_the_last_push_gets_its_reply_again_and_changes_nothing(server: ServerProcess, pusher: Pusher):
    request = pusher.request()
    first = pusher.push(request)
    weights_before, status_before = observed(server, pusher)
    assert server.stub.PushGradients(request, timeout=30) == first
    assert observed(server, pusher) == (weights_before, status_before)


# --- finding 3: identity ----------------------------------------------------------------------------------------

DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("secret", ["none", "another-workers", "one-byte-off"])
def test_a_push_without_the_workers_secret_is_denied_and_changes_nothing(server: ServerProcess, pusher: Pusher,
                                                                          secret: str):
    """Worker ids are sequential; naming one is not enough: PERMISSION_DENIED, counted, nothing else changes."""
    other = Pusher(server)
    wrong = {"none": b"", "another-workers": other.secret,
             "one-byte-off": pusher.secret[:-1] + bytes([pusher.secret[-1] ^ 1])}[secret]
    error = refuse_push(pusher, DENIED, worker_secret=wrong)
    assert "worker_secret" in error.details()
    other.push(other.request())  # the other worker's own secret is good for its own id
    pusher.push(pusher.request())  # and the refused push left the pusher's sequence number unused


def test_a_retry_without_the_secret_gets_no_reply(server: ServerProcess, pusher: Pusher):
    """A retry of the last push answers with the weights; an impostor repeating its number is denied first."""
    request = pusher.request(reply_weights_dtype=pb.DTYPE_FLOAT32)
    pusher.push(request)
    request.worker_secret = b"x" * 32
    refuse(server, pusher, lambda: server.stub.PushGradients(request, timeout=30), DENIED)


def test_a_pull_without_the_secret_is_denied_and_does_not_keep_the_worker_alive(server: ServerProcess,
                                                                                 pusher: Pusher):
    other = Pusher(server)
    request = pb.PullWeightsRequest(worker_id=other.worker_id, have_version=-1, worker_secret=pusher.secret)
    time.sleep(1.0)
    refuse(server, pusher, lambda: server.stub.PullWeights(request, timeout=10), DENIED, counted=False)
    (seen,) = [w for w in server.status().workers if w.worker_id == other.worker_id]
    assert seen.seconds_since_last_seen >= 1.0  # the denied call did not count as the worker's


def test_a_refused_push_with_the_secret_counts_as_a_sign_of_life(server: ServerProcess, pusher: Pusher):
    """As the wire contract says (section 5): the worker is evidently running, whatever was wrong with its push."""
    request = pusher.request(frames=-1)  # (reads the status, which marks nobody)
    time.sleep(2.0)
    (before,) = [w for w in server.status().workers if w.worker_id == pusher.worker_id]
    with pytest.raises(grpc.RpcError) as raised:
        server.stub.PushGradients(request, timeout=30)
    assert raised.value.code() == INVALID
    (seen,) = [w for w in server.status().workers if w.worker_id == pusher.worker_id]
    assert before.seconds_since_last_seen >= 2.0 and seen.seconds_since_last_seen < before.seconds_since_last_seen


# --- finding 4: sizes ------------------------------------------------------------------------------------------


def test_millions_of_epsilons_are_refused_and_status_stays_small(server: ServerProcess, pusher: Pusher):
    """16.8 MB of epsilons: larger than any valid request of the run, so gRPC refuses it before the server reads it
    (RESOURCE_EXHAUSTED, not counted among the run's rejections), and GetStatus does not grow."""
    request = pusher.request(epsilons=[0.5] * 4_000_000)
    assert request.ByteSize() > 16_000_000
    refuse(server, pusher, lambda: server.stub.PushGradients(request, timeout=60), RESOURCE_EXHAUSTED, counted=False)
    assert server.status().ByteSize() < 64 * 1024


def test_200k_epsilons_within_the_size_limit_are_refused_by_their_bound(server: ServerProcess, pusher: Pusher):
    """Under the run's request size limit (its largest valid push, plus 1 MiB), the field's own bound refuses them."""
    request = pusher.request(epsilons=[0.5] * 200_000)
    refuse(server, pusher, lambda: server.stub.PushGradients(request, timeout=60))


def resident_bytes(pid: int) -> int:
    (line,) = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024


def test_requests_larger_than_any_valid_one_are_not_buffered(server: ServerProcess, pusher: Pusher):
    """Four 60 MB pushes at once (finding 4: such uploads left the server's RSS 300 MB higher): each RESOURCE_EXHAUSTED,
    nothing changed, and the server's memory grows by less than one of them."""
    request = pusher.request()
    request.gradients[0].data = bytes(60 * 2**20)
    before = resident_bytes(server.popen.pid)
    with futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: code_of(lambda: server.stub.PushGradients(request, timeout=60)), range(4)))
    assert codes == [RESOURCE_EXHAUSTED] * 4
    refuse(server, pusher, lambda: server.stub.PushGradients(request, timeout=60), RESOURCE_EXHAUSTED, counted=False)
    assert resident_bytes(server.popen.pid) - before < 60 * 2**20


@pytest.mark.parametrize("epsilons", [[0.5, 0.5], [1.5], [float("nan")]], ids=["two-for-one-copy", "above-1", "nan"])
def test_bad_epsilons_are_refused(pusher: Pusher, epsilons: list[float]):
    refuse_push(pusher, epsilons=epsilons)


@pytest.mark.parametrize("name", ["x" * 2**20, "x" * 129, "line\nbreak", "bell\a"],
                         ids=["1MiB", "129-chars", "newline", "control-char"])
def test_bad_worker_names_are_refused(server: ServerProcess, pusher: Pusher, name: str):
    def register():
        server.stub.RegisterWorker(pb.RegisterWorkerRequest(name=name, num_envs=1), timeout=30)
    refuse(server, pusher, register, counted=False)


def test_twenty_huge_names_leave_status_small(server: ServerProcess, pusher: Pusher):
    for _ in range(20):
        with pytest.raises(grpc.RpcError) as raised:
            server.stub.RegisterWorker(pb.RegisterWorkerRequest(name="n" * 2**20, num_envs=1), timeout=30)
        assert raised.value.code() == INVALID
    assert server.status().ByteSize() < 64 * 1024


def test_a_name_of_128_printable_characters_is_accepted(server: ServerProcess):
    name = "é-" * 64
    reply = server.stub.RegisterWorker(pb.RegisterWorkerRequest(name=name, num_envs=1), timeout=10)
    assert {w.worker_id: w.name for w in server.status().workers}[reply.worker_id] == name


@pytest.mark.parametrize("fields", [dict(num_envs=0), dict(num_envs=-1), dict(num_envs=limits.MAX_NUM_ENVS + 1),
                                    dict(num_envs=1, accepted_dtypes=[pb.DTYPE_FLOAT32] * 17)],
                         ids=["no-envs", "negative-envs", "1025-envs", "17-dtypes"])
def test_bad_registrations_are_refused(server: ServerProcess, pusher: Pusher, fields: dict):
    request = pb.RegisterWorkerRequest(name="bad", **fields)
    refuse(server, pusher, lambda: server.stub.RegisterWorker(request, timeout=10), counted=False)


# --- the other push fields -------------------------------------------------------------------------------------


def _episodes(count: int, episode_return: float = 1.0, length: int = 10) -> list[pb.EpisodeResult]:
    return [pb.EpisodeResult(episode_return=episode_return, length=length)] * count


BAD_FIELDS = [
    ("too-many-episodes", dict(episodes=_episodes(MOST_EPISODES + 1))),
    ("return-nan", dict(episodes=_episodes(1, float("nan")))),
    ("return-inf", dict(episodes=_episodes(1, float("-inf")))),
    ("return-over-1e9", dict(episodes=_episodes(1, 1.5e9))),
    ("length-negative", dict(episodes=_episodes(1, length=-1))),
    ("length-over-1e9", dict(episodes=_episodes(1, length=10**9 + 1))),
    ("17-metrics", dict(metrics={f"losses/m{i}": 0.0 for i in range(17)})),
    ("metric-over-1e12", dict(metrics={"losses/value_loss": 2e12})),
    ("metric-nan", dict(metrics={"losses/value_loss": float("nan")})),
    ("metric-bad-name", dict(metrics={"Losses/Value": 1.0})),
    ("metric-three-levels", dict(metrics={"diagnostics/dead_relu/body/fc": 0.5})),
    ("metric-unknown-family", dict(metrics={"charts/grad_norm": 0.5})),
    ("metric-huge-name", dict(metrics={"losses/" + "a" * 2**20: 1.0})),
    ("base-version-negative", dict(base_version=-1)),
    ("base-version-int64-max", dict(base_version=2**63 - 1)),
    ("reply-dtype-unknown", dict(reply_weights_dtype=7)),
]


@pytest.mark.parametrize("overrides", [o for _, o in BAD_FIELDS], ids=[i for i, _ in BAD_FIELDS])
def test_push_fields_outside_their_bounds_are_refused(pusher: Pusher, overrides: dict):
    refuse_push(pusher, **overrides)


def test_episodes_at_the_bound_are_applied(server: ServerProcess, pusher: Pusher):
    before = server.status()
    pusher.push(pusher.request(episodes=_episodes(MOST_EPISODES, -1e9, 10**9)))
    assert server.status().episodes_completed == before.episodes_completed + MOST_EPISODES


def test_one_push_cannot_claim_more_episodes_than_its_frames_cover(tmp_path):
    """Issue 12: a worker of 10 env copies pushing frames=1 with 100 returns of 1e9 ended a CartPole run (target 475).

    An env copy ends at most one episode per agent step, so a push reports at most 2 x the agent steps its
    frames cover: frames=1 allows 2 episodes. The 100 are refused, and nothing but the rejection count changes.
    What still holds, and the contract says so (the trust model): a registered worker with its secret whose
    push covers enough frames can report such returns, and that ends the run.
    """
    server = ServerProcess(tmp_path / "server", "--seed", "5", "--checkpoint-interval", "0")
    try:
        pusher = Pusher(server, num_envs=10)
        pusher.push(pusher.request())
        forged = _episodes(100, 1e9, 1)
        assert len(forged) <= limits.PUSH_SLACK * 10 * 5  # within what 10 env copies allow: the old, only bound
        error = refuse_push(pusher, frames=1, episodes=forged)
        assert "at most 2 episode results for a push of 1 frames" in error.details()
        refuse_push(pusher, frames=49, episodes=forged)  # 98 episodes at most
        status = server.status()
        assert not status.training_done and status.episodes_completed == 0
        pusher.push(pusher.request(frames=2, episodes=_episodes(4, 20.0, 1)))  # at the bound: applied
        assert server.status().episodes_completed == 4
        reply = pusher.push(pusher.request(frames=50, episodes=forged))  # the trust model: covered, so accepted
        assert reply.training_done
    finally:
        server.stop()


def test_pull_with_an_unknown_dtype_is_refused(server: ServerProcess, pusher: Pusher):
    request = pb.PullWeightsRequest(worker_id=pusher.worker_id, have_version=-1, dtype=42, worker_secret=pusher.secret)
    refuse(server, pusher, lambda: server.stub.PullWeights(request, timeout=10), counted=False)


# --- no UNKNOWN ----------------------------------------------------------------------------------------------


def test_an_unexpected_error_in_a_handler_is_internal_with_a_message(tmp_path, monkeypatch):
    """A fault inside the service is answered INTERNAL, naming the RPC and the error, never UNKNOWN; the next call works."""
    options = ServerOptions(port=0, checkpoint_dir=str(tmp_path / "checkpoints"))
    run = build_run(RunConfig(target_return=None), options)
    grpc_server, port, _ = create_server(run, options)
    grpc_server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ParameterServerServiceStub(channel)

            def broken(global_frames: int, updates: int) -> tuple[float, float]:
                raise RuntimeError("a fault for the test")

            monkeypatch.setattr(run.stats, "rates", broken)
            with pytest.raises(grpc.RpcError) as raised:
                stub.GetStatus(pb.GetStatusRequest(), timeout=10)
            assert raised.value.code() == grpc.StatusCode.INTERNAL
            assert "GetStatus: internal error: RuntimeError: a fault for the test" in raised.value.details()
            monkeypatch.undo()
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).version == 0
    finally:
        grpc_server.stop(0)


def test_the_request_size_limit_admits_the_largest_valid_push():
    """Every field at its bound (the whole model's float32 gradients, the most episodes 1024 copies may report, 1024
    epsilons, 16 metrics of the longest names): within max_request_bytes, so no valid push meets RESOURCE_EXHAUSTED."""
    config = RunConfig(env_id="CartPole-v1")
    message = run_config_message(config, model_spec(config), 64 * 2**20)
    layout = tensors.FlatLayout(message.model.layout)
    episodes = limits.max_episodes_per_push(message, limits.MAX_NUM_ENVS)
    push = pb.PushGradientsRequest(
        worker_id=2**32 - 1, base_version=limits.INT64_MAX, sequence_number=2**64 - 1, frames=limits.INT64_MAX,
        gradients=layout.encode(torch.zeros(layout.total)), reply_weights_dtype=pb.DTYPE_FLOAT32,
        episodes=[pb.EpisodeResult(episode_return=-limits.MAX_EPISODE_RETURN, length=limits.MAX_EPISODE_LENGTH)]
        * episodes, epsilons=[0.5] * limits.MAX_NUM_ENVS, worker_secret=bytes(32), sliced=True,
        gradient_norm=limits.MAX_GRADIENT_NORM, metrics={f"{i:02d}" + "m" * 139: limits.MAX_METRIC_VALUE
                                                          for i in range(limits.MAX_METRICS)})
    assert push.ByteSize() <= limits.max_request_bytes(message, layout)
