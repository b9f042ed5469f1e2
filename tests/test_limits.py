"""Limits that keep a run's memory and replies bounded whoever calls: --max-workers, GetStatus's capped worker list,
`asyncrl status` under big replies, and retried pushes answered from the one shared snapshot."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent import futures

import grpc
import torch

from asyncrl.common import tensors
from asyncrl.server.registry import MAX_LISTED_WORKERS
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc
from conftest import CHILD_ENV, ServerProcess, code_of, pull, register

FLAGS = ("--target-return", "none", "--checkpoint-interval", "0", "--seed", "2")
SILENCE = 5.0


def test_max_workers_refuses_newcomers_until_a_worker_is_silent(server_factory):
    server: ServerProcess = server_factory(*FLAGS, "--max-workers", "2", "--silence-timeout", str(SILENCE))
    a, b = register(server.stub, "a"), register(server.stub, "b")
    assert code_of(lambda: register(server.stub, "c")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = server.status()
    assert (status.registered_workers, status.max_workers) == (2, 2)
    assert sorted(w.name for w in status.workers) == ["a", "b"]  # the refusal added nothing
    time.sleep(SILENCE + 0.5)  # both silent now
    pull(server.stub, a)  # a speaks again: alive
    c = register(server.stub, "c")  # takes silent b's slot
    assert code_of(lambda: register(server.stub, "d")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(lambda: pull(server.stub, b)) == grpc.StatusCode.NOT_FOUND  # b registers again when it returns
    assert sorted(w.name for w in server.status().workers) == ["a", "c"]
    assert len(pull(server.stub, c).parameters) > 0


def test_status_stays_small_however_many_workers_register(server_factory):
    server: ServerProcess = server_factory(*FLAGS)
    small = server.status().ByteSize()
    for index in range(300):
        register(server.stub, f"worker-{index:03d}-" + "x" * 100)
    status = server.status()
    assert status.registered_workers == 300 and status.live_workers == 300
    assert len(status.workers) == MAX_LISTED_WORKERS
    assert status.ByteSize() < small + MAX_LISTED_WORKERS * 200
    newest = register(server.stub, "newest")
    assert server.status().workers[0].worker_id == newest.worker_id  # the most recently seen come first


def test_a_retry_is_answered_with_the_current_shared_weights(server_factory):
    """A retried push after another worker's update: nothing applied again, and the reply holds the current version
    and exactly the weights a pull returns (the one encoded snapshot, not a stored per-worker copy)."""
    server: ServerProcess = server_factory(*FLAGS)
    first, second = register(server.stub, "first"), register(server.stub, "second")

    def request(worker: pb.RegisterWorkerResponse, version: int) -> pb.PushGradientsRequest:
        return pb.PushGradientsRequest(
            worker_id=worker.worker_id, worker_secret=worker.worker_secret, base_version=version, sequence_number=1,
            frames=5, reply_weights_dtype=pb.DTYPE_FLOAT32,
            gradients=[tensors.encode(s.name, torch.full(tuple(s.shape), 0.01)) for s in worker.config.model.layout])

    retried = request(first, 0)
    original = server.stub.PushGradients(retried, timeout=10)
    server.stub.PushGradients(request(second, original.version), timeout=10)
    again = server.stub.PushGradients(retried, timeout=10)
    current = pull(server.stub, first)
    assert again.version == current.version == original.version + 1
    assert [t.data for t in again.parameters] == [t.data for t in current.parameters]
    assert [t.data for t in again.parameters] != [t.data for t in original.parameters]
    status = server.status()
    assert status.version == 2 and status.global_frames == 10


class _BigStatus(pb_grpc.ParameterServerServiceServicer):
    """A stand-in server whose GetStatus reply is over gRPC's 4 MiB default, and which advertises 16 MiB."""

    def GetConfig(self, request, context):
        return pb.GetConfigResponse(config=pb.RunConfig(max_message_bytes=16 * 2**20))

    def GetStatus(self, request, context):
        return pb.GetStatusResponse(global_frames=42, workers=[pb.WorkerStatus(worker_id=1, name="w" * (5 * 2**20))])


def test_status_command_raises_its_receive_limit_to_the_advertised_maximum():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_send_message_length", 16 * 2**20)])
    pb_grpc.add_ParameterServerServiceServicer_to_server(_BigStatus(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = subprocess.run([sys.executable, "-m", "asyncrl", "status", "--server", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, env=CHILD_ENV, timeout=120)
    finally:
        server.stop(0)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "42" in result.stdout
