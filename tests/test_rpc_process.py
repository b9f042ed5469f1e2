"""The worker's RPC process (asyncrl.worker.rpc_process): ordered replies, the call outcomes, stops, its lifetime."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch

from asyncrl.common import tensors
from asyncrl.common.config import WorkerOptions
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.calls import ChannelCalls
from asyncrl.worker import outcomes
from asyncrl.worker.outcomes import Refused, RpcProcessDied, StaleGradients, Stopped, UnknownWorker
from asyncrl.worker.rpc_process import ProcessCalls
from conftest import Process


def _push(worker: pb.RegisterWorkerResponse, layout: tensors.FlatLayout, base_version: int,
          sequence_number: int) -> bytes:
    return pb.PushGradientsRequest(
        worker_id=worker.worker_id, worker_secret=worker.worker_secret, base_version=base_version,
        sequence_number=sequence_number, frames=5,
        gradients=layout.encode(torch.full((layout.total,), 1e-3), pb.DTYPE_FLOAT32),
        reply_weights_dtype=pb.DTYPE_FLOAT32,
    ).SerializeToString()


def _pull(worker: pb.RegisterWorkerResponse, have_version: int, worker_id: int | None = None) -> bytes:
    return pb.PullWeightsRequest(worker_id=worker.worker_id if worker_id is None else worker_id, have_version=have_version,
                                 worker_secret=worker.worker_secret).SerializeToString()


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", [ProcessCalls, ChannelCalls])
def test_calls_answer_replies_and_the_same_outcomes_in_the_rpc_process_and_in_the_callers(server_factory, kind) -> None:
    """Made by the child process or in the caller's thread, a call ends in its reply or the same outcome."""
    server = server_factory("--max-staleness", "1", "--target-return", "none")
    calls = kind(WorkerOptions(server=server.address), threading.Event())
    try:
        registered = pb.RegisterWorkerResponse.FromString(
            calls.call("RegisterWorker", pb.RegisterWorkerRequest(name="rpc", num_envs=1).SerializeToString()))
        worker, layout = registered, tensors.FlatLayout(registered.config.model.layout)
        first = calls.start("PushGradients", _push(worker, layout, 0, 1))
        if kind is ProcessCalls:
            with pytest.raises(RuntimeError, match="one call at a time"):
                calls.start("PullWeights", _pull(worker, -1))
        assert pb.PushGradientsResponse.FromString(first()).version == 1
        second = pb.PushGradientsResponse.FromString(calls.call("PushGradients", _push(worker, layout, 0, 2)))
        assert second.version == 2 and len(second.parameters) == len(layout.specs)
        with pytest.raises(StaleGradients, match="current version 2"):
            calls.call("PushGradients", _push(worker, layout, 0, 3))
        refused_later = calls.start("PushGradients", _push(worker, layout, 0, 3))  # the outcome is the receiver's
        with pytest.raises(StaleGradients, match="current version 2"):
            refused_later()
        with pytest.raises(UnknownWorker, match=f"unknown worker id {worker.worker_id + 100}"):
            calls.call("PullWeights", _pull(worker, -1, worker_id=worker.worker_id + 100))
        short = pb.PushGradientsRequest.FromString(_push(worker, layout, 2, 3))  # 3 was refused: not used up
        del short.gradients[-1]
        with pytest.raises(Refused, match="tensor") as refused:
            calls.call("PushGradients", short.SerializeToString())
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert str(refused.value).startswith("INVALID_ARGUMENT: ")
        current = pb.PullWeightsResponse.FromString(calls.call("PullWeights", _pull(worker, 2)))
        assert (current.version, len(current.parameters)) == (2, 0)
        full = pb.PullWeightsResponse.FromString(calls.call("PullWeights", _pull(worker, -1)))
        assert torch.equal(layout.decode(full.parameters), layout.decode(second.parameters))
    finally:
        calls.close()
    if kind is ProcessCalls:
        assert calls.process.returncode == 0  # it ended because its stdin closed


@pytest.mark.parametrize("outcome", [
    UnknownWorker("unknown worker id 7"), StaleGradients(""), Stopped(),
    Refused(grpc.StatusCode.PERMISSION_DENIED, "role 'evaluation' may not push"),
    Refused(grpc.StatusCode.INVALID_ARGUMENT, " leading space, and ünïcode"),
    Refused(grpc.StatusCode.UNAUTHENTICATED, ""),
])
def test_an_outcome_crosses_the_rpc_process_as_fields(outcome: Exception) -> None:
    """Kind, status code and details are each their own field of the frame: the details are bytes, never parsed."""
    kind, code, details = outcomes.encode(outcome)
    header = outcomes.HEADER.pack(kind, code, len(details))
    assert len(header) == outcomes.HEADER.size and kind != outcomes.REPLY
    read_kind, read_code, length = outcomes.HEADER.unpack(header)
    back = outcomes.decode(read_kind, read_code, (details + b"next message")[:length])
    assert type(back) is type(outcome) and str(back) == str(outcome)
    if isinstance(outcome, Refused):
        assert back.code == outcome.code and back.details == outcome.details and back.code.name in str(back)
    with pytest.raises(TypeError, match="not a call outcome"):
        outcomes.encode(RpcProcessDied("made by the worker, never sent"))


def _unreachable() -> str:
    """An address on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_a_stop_ends_the_retries_against_an_unreachable_server() -> None:
    address = _unreachable()
    stop = threading.Event()
    calls = ProcessCalls(WorkerOptions(server=address, rpc_deadline=1.0, max_backoff=0.2), stop)
    try:
        receive = calls.start("RegisterWorker", pb.RegisterWorkerRequest(name="rpc").SerializeToString())
        threading.Timer(1.0, stop.set).start()
        started = time.monotonic()
        with pytest.raises(Stopped):
            receive()
        assert time.monotonic() - started < 10
    finally:
        calls.close()


def test_a_stop_signal_during_start_up_ends_retries_instead_of_the_process() -> None:
    """SIGTERM before the child could have installed its handlers (it is still importing gRPC)."""
    calls = ProcessCalls(WorkerOptions(server=_unreachable(), max_backoff=0.2), threading.Event())
    try:
        calls.process.send_signal(signal.SIGTERM)
        with pytest.raises(Stopped):
            calls.call("RegisterWorker", pb.RegisterWorkerRequest(name="rpc").SerializeToString())
    finally:
        calls.close()


def test_a_dead_rpc_process_is_an_error_not_a_hang() -> None:
    calls = ProcessCalls(WorkerOptions(server="127.0.0.1:1"), threading.Event())
    try:
        calls.process.kill()
        calls.process.wait()
        with pytest.raises(RpcProcessDied, match="RPC process exited"):
            calls.call("RegisterWorker", pb.RegisterWorkerRequest(name="rpc").SerializeToString())
    finally:
        calls.close()


def _rpc_process_of(worker_pid: int) -> int:
    """The worker's one child, once it runs the RPC module (between fork and exec it still looks like the worker)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = _children(worker_pid)
        assert len(children) <= 1, f"the worker has {len(children)} children"
        if children and b"asyncrl.worker.rpc_process" in Path(f"/proc/{children[0]}/cmdline").read_bytes():
            return children[0]
        time.sleep(0.05)
    raise AssertionError("the worker started no RPC process")


def _wait_until_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _running(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived its worker"
        time.sleep(0.05)


def _pushing_worker(server_factory, worker_factory, name: str) -> tuple[Process, int]:
    """A worker that has had 10 pushes applied, and its RPC process."""
    server = server_factory("--target-return", "none")
    worker = worker_factory(server.address, name)
    child = _rpc_process_of(worker.popen.pid)
    deadline = time.monotonic() + 60
    while server.status().updates_applied < 10:
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.1)
    return worker, child


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_the_rpc_process_ends_with_its_worker(server_factory, worker_factory, signum: int) -> None:
    worker, child = _pushing_worker(server_factory, worker_factory, "short-lived")
    worker.signal(signum)
    assert worker.wait(timeout=30) == (-signal.SIGKILL if signum == signal.SIGKILL else 0)
    _wait_until_gone(child)


def test_a_worker_whose_rpc_process_dies_exits_with_an_error(server_factory, worker_factory) -> None:
    worker, child = _pushing_worker(server_factory, worker_factory, "orphaned")
    os.kill(child, signal.SIGKILL)
    assert worker.wait(timeout=30) == 1
    assert "RPC process exited" in worker.log()


def test_a_retrying_rpc_process_dies_with_its_sigkilled_worker(worker_factory) -> None:
    """While it retries, the RPC process reads no requests (nor the end of its stdin): the kernel must end it."""
    worker = worker_factory(_unreachable(), "retrying", "--max-backoff", "0.2")
    child = _rpc_process_of(worker.popen.pid)
    deadline = time.monotonic() + 30
    while "retrying in" not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.05)
    worker.signal(signal.SIGKILL)
    worker.wait(timeout=30)
    _wait_until_gone(child)
