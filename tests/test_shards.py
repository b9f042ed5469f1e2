"""A sharded parameter server (docs/sharding.md): shard processes on 127.0.0.1, through the generated stubs and
through real workers.

One pusher sends a fixed, seeded sequence of gradients, large enough that clipping often
acts, to a server of one process and to 2 and 3 shards: the parameters end byte-identical.
The refusals a shard adds (an unsliced request, a registration or report off shard 0, a
wrong secret, a worker it has not seen, a false gradient norm) change nothing. A push one
shard refuses counts its episodes once at shard 0. `asyncrl train --shards 2` learns
CartPole with 2 workers; a shard stopped and resumed while shard 0 serves on (it answers a
pull and applies a push meanwhile) takes its workers back.
"""

from __future__ import annotations

import csv
import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch

from asyncrl.common.tensors import FlatLayout, decode, encode, flat_norm
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.common import checkpoint
from asyncrl.common.config import WorkerOptions
from asyncrl.worker.client import GrpcConnection
from asyncrl.worker.daemon import Worker
from asyncrl.worker.outcomes import StaleGradients
from asyncrl.worker.rpc_process import ProcessCalls
from conftest import CHILD_ENV, Process, ServerProcess, code_of, register, start_worker
from deployment import free_port

PUSHES = 30
FRAMES = 5  # one CartPole rollout of t_max 5, one env copy


def start_shards(directory: Path, count: int, *flags: str) -> list[ServerProcess]:
    """count shard processes, shard 0 last (it is told the others' addresses)."""
    if count == 1:
        return [ServerProcess(directory / "shard0", *flags)]
    key = directory / "shard.key"
    directory.mkdir(parents=True, exist_ok=True)
    key.write_text("k" * 32)
    shared = ["--shards", str(count), "--shard-key-file", str(key), *flags]
    others = [ServerProcess(directory / f"shard{i}", *shared, "--shard-index", str(i)) for i in range(1, count)]
    addresses = ",".join(["127.0.0.1:0", *(s.address for s in others)])
    return [ServerProcess(directory / "shard0", *shared, "--shard-index", "0", "--shard-addresses", addresses),
            *others]


def stop(shards: list[ServerProcess]) -> None:
    for shard in shards:
        shard.stop()


def sliced_pull(shard: ServerProcess, worker: pb.RegisterWorkerResponse) -> pb.PullWeightsResponse:
    return shard.stub.PullWeights(pb.PullWeightsRequest(worker_id=worker.worker_id, have_version=-1, sliced=True,
                                                        worker_secret=worker.worker_secret), timeout=10)


def sliced_push(shard: ServerProcess, worker: pb.RegisterWorkerResponse, sequence: int, base_version: int,
                piece: torch.Tensor, norm: float) -> pb.PushGradientsResponse:
    return shard.stub.PushGradients(pb.PushGradientsRequest(
        worker_id=worker.worker_id, worker_secret=worker.worker_secret, sequence_number=sequence,
        base_version=base_version, frames=FRAMES, gradients=[encode("slice", piece)], sliced=True, gradient_norm=norm,
    ), timeout=10)


def gradients(total: int) -> list[torch.Tensor]:
    """Seeded gradients whose norms range around max_grad_norm (40), so that clipping acts on about half."""
    generator = torch.Generator().manual_seed(1234)
    scales = torch.linspace(5.0, 80.0, PUSHES)[torch.randperm(PUSHES, generator=generator)]
    return [torch.randn(total, generator=generator) * float(s) / math.sqrt(total) for s in scales]


def pushed_parameters(shards: list[ServerProcess]) -> torch.Tensor:
    """The fixed sequence pushed by one worker, slice by slice; the flat parameters after it, from every shard."""
    worker = register(shards[0].stub)
    slices = [(info.offset, info.length) for info in worker.shards]
    total = sum(length for _, length in slices)
    assert [offset for offset, _ in slices] == [sum(length for _, length in slices[:i]) for i in range(len(slices))]
    for shard in shards:  # the first contact with each shard: a pull
        sliced_pull(shard, worker)
    for sequence, gradient in enumerate(gradients(total), start=1):
        norm = flat_norm(gradient)
        for shard, (offset, length) in zip(shards, slices):
            sliced_push(shard, worker, sequence, sequence - 1, gradient[offset:offset + length], norm)
    pieces = [decode(sliced_pull(shard, worker).parameters[0]) for shard in shards]
    return torch.cat(pieces)


def test_one_worker_ends_byte_identical_on_one_two_and_three_shards(tmp_path):
    results = {}
    for count in (1, 2, 3):
        shards = start_shards(tmp_path / f"k{count}", count)
        try:
            results[count] = pushed_parameters(shards)
            assert [s.status().version for s in shards] == [PUSHES] * count
            assert [s.status().global_frames for s in shards] == [PUSHES * FRAMES] * count
        finally:
            stop(shards)
    assert results[1].numel() % 3 != 0, "choose a model whose size 3 does not divide: the split must be uneven"
    assert torch.equal(results[1], results[2]) and torch.equal(results[1], results[3])
    # The sequence moved the parameters, and an unsliced pull of the one-process server agrees with its sliced one.
    assert not torch.equal(results[1], pushed_parameters_initial(tmp_path))


def pushed_parameters_initial(tmp_path: Path) -> torch.Tensor:
    (server,) = start_shards(tmp_path / "initial", 1)
    try:
        worker = register(server.stub)
        unsliced = server.stub.PullWeights(pb.PullWeightsRequest(worker_id=worker.worker_id, have_version=-1,
                                                                 worker_secret=worker.worker_secret), timeout=10)
        layout = FlatLayout(worker.config.model.layout)
        whole = layout.decode(unsliced.parameters)
        assert torch.equal(whole, decode(sliced_pull(server, worker).parameters[0]))
        return whole
    finally:
        server.stop()


@pytest.fixture
def two_shards(tmp_path):
    shards = start_shards(tmp_path, 2)
    yield shards
    stop(shards)


def snapshot(shards: list[ServerProcess]) -> list[tuple]:
    """Every shard's version, T and parameters (via a fresh worker's sliced pulls)."""
    watcher = register(shards[0].stub, "watcher")
    return [(s.status().version, s.status().global_frames, sliced_pull(s, watcher).parameters[0].data)
            for s in shards]


def test_a_shard_refuses_what_is_not_its_part_and_changes_nothing(two_shards):
    shard0, shard1 = two_shards
    worker = register(shard0.stub)
    assert [info.address for info in worker.shards] == ["", shard1.address]
    offset, length = worker.shards[1].offset, worker.shards[1].length
    sliced_pull(shard1, worker)
    before = snapshot(two_shards)
    whole_layout = FlatLayout(worker.config.model.layout)
    piece = torch.full((length,), 0.01)
    norm = flat_norm(piece)
    unsliced = pb.PushGradientsRequest(worker_id=worker.worker_id, worker_secret=worker.worker_secret,
                                       sequence_number=1, frames=FRAMES,
                                       gradients=whole_layout.encode(torch.zeros(whole_layout.total)))
    refusals = {
        "unsliced push": (lambda: shard1.stub.PushGradients(unsliced, timeout=10),
                          grpc.StatusCode.FAILED_PRECONDITION),
        "unsliced pull": (lambda: shard1.stub.PullWeights(pb.PullWeightsRequest(
            worker_id=worker.worker_id, have_version=-1, worker_secret=worker.worker_secret), timeout=10),
            grpc.StatusCode.FAILED_PRECONDITION),
        "registration off shard 0": (lambda: register(shard1.stub), grpc.StatusCode.FAILED_PRECONDITION),
        "report off shard 0": (lambda: shard1.stub.ReportEvaluation(pb.ReportEvaluationRequest(
            worker_id=worker.worker_id, worker_secret=worker.worker_secret,
            episodes=[pb.EpisodeResult(episode_return=1.0, length=1)]), timeout=10),
            grpc.StatusCode.FAILED_PRECONDITION),
        "wrong secret": (lambda: shard1.stub.PullWeights(pb.PullWeightsRequest(
            worker_id=worker.worker_id + 1, have_version=-1, sliced=True, worker_secret=worker.worker_secret),
            timeout=10), grpc.StatusCode.PERMISSION_DENIED),
        "norm below the slice's": (lambda: sliced_push(shard1, worker, 1, 0, piece, norm / 2),
                                   grpc.StatusCode.INVALID_ARGUMENT),
        "norm not finite": (lambda: sliced_push(shard1, worker, 1, 0, piece, math.nan),
                            grpc.StatusCode.INVALID_ARGUMENT),
        "slice of the wrong length": (lambda: sliced_push(shard1, worker, 1, 0, torch.zeros(length + 1), norm),
                                      grpc.StatusCode.INVALID_ARGUMENT),
    }
    for what, (call, expected) in refusals.items():
        assert code_of(call) == expected, what
    assert snapshot(two_shards) == before
    # A worker registered but never seen by shard 1 (its first call there is a pull) is told to register again.
    stranger = register(shard0.stub, "stranger")
    assert code_of(lambda: sliced_push(shard1, stranger, 1, 0, piece, norm)) == grpc.StatusCode.NOT_FOUND
    # And the refused worker's next push is still its first.
    assert sliced_push(shard1, worker, 1, 0, piece, norm).version == before[1][0] + 1
    assert offset == worker.shards[0].length


def test_a_push_one_shard_refuses_counts_its_episodes_once(tmp_path):
    """A push that shard 1 refuses as stale but shard 0 applied took its episodes there: the worker does not send
    them again (CallFailed.episodes_taken). One that shard 0 refuses did not: they go with the next push. Either way
    shard 0 counts each episode once."""
    shards = start_shards(tmp_path, 2, "--max-staleness", "1", "--target-return", "none")
    shard0, shard1 = shards
    stop_event = threading.Event()

    def calls_to(address: str) -> ProcessCalls:  # as the worker daemon makes them
        return ProcessCalls(WorkerOptions(server=address, rpc_deadline=10.0), stop_event)

    connection = GrpcConnection("float32", calls_to(shard0.address), connect=calls_to)
    worker = Worker(connection, "episodes", 1, stop_event, overlap=False)
    try:
        worker.register()
        finished: list[tuple[float, int]] = []  # the episodes the worker's env copy ended
        take = worker.actor.take_finished_episodes

        def recorded() -> list[tuple[float, int]]:
            episodes = take()
            finished.extend(episodes)
            return episodes

        worker.actor.take_finished_episodes = recorded
        assert worker.step() is False  # pulls every slice, pushes: both shards at version 1
        rival = register(shard0.stub, "rival")
        sliced_pull(shard1, rival)
        ones = torch.full((connection.shards[1].length,), 1e-4)

        # Shard 1 moves 2 versions past the worker's base: it refuses the worker's next push, which shard 0 applies.
        for sequence, base in ((1, 1), (2, 2)):
            sliced_push(shard1, rival, sequence, base, ones, flat_norm(ones))
        taken = [(111.0, 111), (112.0, 112)]
        worker.pending_episodes = list(taken)
        with pytest.raises(StaleGradients) as refused:
            worker.step()
        assert refused.value.episodes_taken
        assert shard0.status().episodes_completed == len(taken) + len(finished)
        assert not set(taken) & set(worker.pending_episodes)
        assert worker.step() is False  # pulls every slice afresh, then its push is applied by both
        assert shard0.status().episodes_completed == len(taken) + len(finished)

        # Now shard 0 refuses (stale) while shard 1 applies: the episodes are not taken, and go with the next push.
        ones = torch.full((connection.shards[0].length,), 1e-4)
        version = shard0.status().version
        for sequence in (1, 2):
            sliced_push(shard0, rival, sequence, version + sequence - 1, ones, flat_norm(ones))
        given_back = [(221.0, 221)]
        worker.pending_episodes = list(given_back)
        with pytest.raises(StaleGradients) as refused:
            worker.step()
        assert not refused.value.episodes_taken
        assert worker.pending_episodes[:1] == given_back
        assert worker.step() is False
        assert worker.pending_episodes == []
        assert shard0.status().episodes_completed == len(taken) + len(given_back) + len(finished)
    finally:
        if worker.actor is not None:
            worker.actor.close()
        connection.close()
        stop(shards)


def test_a_sharded_server_needs_its_addresses_and_key(tmp_path):
    process = Process(["server", "--shards", "2", "--port", "0", "--checkpoint-dir", str(tmp_path / "c")],
                      tmp_path / "server.log")
    assert process.wait(timeout=60) == 2
    assert "--shard-addresses (ASYNCRL_SHARD_ADDRESSES)" in process.log()
    assert "Traceback" not in process.log()


# As tests/test_e2e.py's one-process run: 2 workers x 4 env copies reach 195 in about 40k-100k frames here.
FRAME_BUDGET = 400_000
TARGET = 195.0


def test_train_with_two_shards_learns_cartpole(tmp_path: Path):
    """`asyncrl train --shards 2`: 2 shard processes and 2 workers reach a mean return of 195 within the budget;
    both shards applied the run's pushes and wrote their final checkpoints."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncrl", "train", "--run-dir", str(tmp_path), "--shards", "2", "--workers", "2",
         "--envs", "4", "--seed", "7", "--target-return", str(TARGET), "--max-frames", str(FRAME_BUDGET),
         "--progress-interval", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=CHILD_ENV, timeout=480,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    last = list(csv.DictReader(open(tmp_path / "progress.csv")))[-1]
    assert float(last["mean_return_100"]) >= TARGET, last
    assert int(last["global_frames"]) < FRAME_BUDGET
    _, coordinator = checkpoint.load_latest(tmp_path / "checkpoints")
    _, other = checkpoint.load_latest(tmp_path / "checkpoints-shard-1")
    assert coordinator["training_done"] and coordinator["shard"] == {"index": 0, "count": 2}
    assert other["shard"] == {"index": 1, "count": 2}
    # Every push goes to both shards; each refuses its own stale ones, and a few are in flight at the end.
    versions = coordinator["store"]["version"], other["store"]["version"]
    assert min(versions) >= 0.9 * max(versions), versions
    for log in ("worker-0.log", "worker-1.log", "server-shard-1.log"):
        text = (tmp_path / log).read_text()
        assert "Traceback" not in text and "refused this worker" not in text, text[-2000:]


def wait_for(predicate, what: str, processes: list[Process], timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            assert process.popen.poll() is None, f"{process.args} exited:\n{process.log()[-3000:]}"
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_shard_stopped_and_resumed_while_shard_0_serves_takes_its_workers_back(tmp_path: Path):
    """SIGTERM of shard 1 writes its checkpoint; shard 0 keeps serving meanwhile; shard 1 --resume'd on its port
    starts from that checkpoint, and the workers (told NOT_FOUND there) register again and push to both."""
    port = free_port()
    key = tmp_path / "shard.key"
    key.write_text("k" * 32)
    shared = ["--shards", "2", "--shard-key-file", str(key), "--target-return", "none", "--max-frames", "10000000",
              "--checkpoint-interval", "0", "--seed", "3"]
    shard1_flags = [*shared, "--shard-index", "1", "--port", str(port)]
    shard1 = ServerProcess(tmp_path / "shard1", *shard1_flags)
    shard0 = ServerProcess(tmp_path / "shard0", *shared, "--shard-index", "0",
                           "--shard-addresses", f"127.0.0.1:0,127.0.0.1:{port}")
    workers = [start_worker(tmp_path, shard0.address, f"w{i}", "--envs", "2") for i in range(2)]
    resumed = None
    try:
        wait_for(lambda: shard1.status().version > 100, "shard 1 to apply 100 pushes", [shard0, shard1, *workers])
        shard1.signal(signal.SIGTERM)
        assert shard1.wait(timeout=60) == 0, shard1.log()[-3000:]
        path, state = checkpoint.load_latest(shard1.checkpoint_dir)
        version = state["store"]["version"]
        assert f"stopped at T={state['store']['global_frames']}, version {version}" in shard1.log()

        # Shard 0 serves on: a worker registered now pulls its slice there and has a push applied. The workers
        # wait for shard 1 (retrying its half of their push), rather than exit.
        watcher = register(shard0.stub, "watcher")
        pulled = sliced_pull(shard0, watcher)
        length = watcher.shards[0].length
        assert decode(pulled.parameters[0]).numel() == length
        piece = torch.full((length,), 1e-4)
        applied = sliced_push(shard0, watcher, 1, pulled.version, piece, flat_norm(piece))
        assert applied.version > pulled.version and shard0.status().version >= applied.version
        assert all(worker.popen.poll() is None for worker in workers)
        assert code_of(shard1.status) == grpc.StatusCode.UNAVAILABLE

        resumed = ServerProcess(tmp_path / "shard1", *shard1_flags, "--resume")
        assert resumed.port == port and f"resuming from {path}" in resumed.log()
        wait_for(lambda: all("registering again" in worker.log() for worker in workers),
                 "both workers to register again", [shard0, resumed, *workers])
        base0, base1 = shard0.status().version, resumed.status().version
        wait_for(lambda: resumed.status().version > base1 + 50 and shard0.status().version > base0 + 50,
                 "both shards to apply the workers' pushes again", [shard0, resumed, *workers])
        assert resumed.status().global_frames > state["store"]["global_frames"] and base1 >= version
        assert all("Traceback" not in worker.log() for worker in workers)
        assert "bad_sequence" not in shard0.log() + resumed.log()
    finally:
        for process in [*workers, shard0, shard1, *([resumed] if resumed else [])]:
            process.stop()
