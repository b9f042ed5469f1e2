"""The asyncrl.v1 wire contract, exercised through the generated stubs against a real `asyncrl server` process."""

from __future__ import annotations

import itertools

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from asyncrl.common import tensors
from asyncrl.v1 import parameter_server_pb2 as pb
from conftest import ServerProcess, pull, register

SERVICE = "asyncrl.v1.ParameterServerService"
_names = itertools.count()
# Pushes of up to 2 x 4 copies x t_max 5 = 40 frames are within the contract's bound.
WORKER_ENVS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the module: every test registers its own worker and measures changes relative to now."""
    process = ServerProcess(tmp_path_factory.mktemp("api"), "--seed", "3", "--target-return", "none")
    yield process
    process.stop()


class Worker:
    """A registered worker on the test side: its id, the layout it was given, and its next sequence number."""

    def __init__(self, server: ServerProcess, name: str | None = None) -> None:
        self.stub = server.stub
        self.name = name or f"api-worker-{next(_names)}"
        self.registration = self.stub.RegisterWorker(
            pb.RegisterWorkerRequest(name=self.name, num_envs=WORKER_ENVS), timeout=10)
        self.id = self.registration.worker_id
        self.layout = list(self.registration.config.model.layout)
        self.next_sequence = 1
        self._generator = torch.Generator().manual_seed(1000 + self.id)

    def gradients(self, dtype: int = pb.DTYPE_FLOAT32) -> list[pb.Tensor]:
        named = [(s.name, 0.1 * torch.randn(tuple(s.shape), generator=self._generator)) for s in self.layout]
        return [tensors.encode(name, tensor, dtype) for name, tensor in named]

    def request(self, frames: int, base_version: int | None = None, **fields) -> pb.PushGradientsRequest:
        if base_version is None:
            base_version = self.stub.GetStatus(pb.GetStatusRequest(), timeout=10).version
        request = pb.PushGradientsRequest(
            worker_id=self.id, base_version=base_version, sequence_number=self.next_sequence, frames=frames,
            gradients=self.gradients(), worker_secret=self.registration.worker_secret, **fields,
        )
        self.next_sequence += 1
        return request

    def push(self, request: pb.PushGradientsRequest) -> pb.PushGradientsResponse:
        return self.stub.PushGradients(request, timeout=10)


def raw(parameters) -> list[tuple[str, list[int], int, bytes]]:
    return [(t.name, list(t.shape), t.dtype, t.data) for t in parameters]


def as_float32(tensor: pb.Tensor) -> np.ndarray:
    """Decodes a wire tensor to float32 with numpy alone, independently of asyncrl.common.tensors."""
    shape = tuple(tensor.shape)
    if tensor.dtype == pb.DTYPE_FLOAT32:
        return np.frombuffer(tensor.data, dtype="<f4").reshape(shape)
    if tensor.dtype == pb.DTYPE_FLOAT16:
        return np.frombuffer(tensor.data, dtype="<f2").astype(np.float32).reshape(shape)
    if tensor.dtype == pb.DTYPE_BFLOAT16:
        bits = np.frombuffer(tensor.data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    raise AssertionError(f"unexpected dtype {tensor.dtype}")


def test_version_and_frames_count_applied_pushes(server: ServerProcess) -> None:
    """Each applied push raises the version by exactly one and T by its frames; GetStatus agrees."""
    worker = Worker(server)
    before = server.status()
    frames_per_push = [5, 17, 0, 3, 40]
    version, global_frames = before.version, before.global_frames
    for frames in frames_per_push:
        reply = worker.push(worker.request(frames))
        assert reply.version == version + 1
        assert reply.global_frames == global_frames + frames
        assert not reply.training_done
        assert len(reply.parameters) == 0  # not asked for
        version, global_frames = reply.version, reply.global_frames
    after = server.status()
    assert after.version == before.version + len(frames_per_push)
    assert after.global_frames == before.global_frames + sum(frames_per_push)
    assert after.updates_applied == before.updates_applied + len(frames_per_push)
    assert after.updates_rejected == before.updates_rejected
    pulled = pull(server.stub, worker.registration)
    assert (pulled.version, pulled.global_frames) == (after.version, after.global_frames)


def test_pull_at_current_version_has_no_payload(server: ServerProcess) -> None:
    """A pull with have_version equal to the current version returns the version and T but no tensors."""
    worker = Worker(server)
    worker.push(worker.request(7))
    full = pull(server.stub, worker.registration)
    assert len(full.parameters) == len(worker.layout)
    current = pull(server.stub, worker.registration, have_version=full.version)
    assert current.version == full.version
    assert current.global_frames == full.global_frames
    assert len(current.parameters) == 0
    stale = pull(server.stub, worker.registration, have_version=full.version - 1)
    assert raw(stale.parameters) == raw(full.parameters)


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [(pb.DTYPE_FLOAT16, 2.0**-11), (pb.DTYPE_BFLOAT16, 2.0**-8)],
    ids=["float16", "bfloat16"],
)
def test_half_precision_pull_matches_float32(server: ServerProcess, dtype: int, rtol: float) -> None:
    """A float16/bfloat16 pull carries 2 bytes per element and the float32 values to within that format's rounding."""
    worker = Worker(server)
    worker.push(worker.request(1))  # non-trivial values in every tensor, biases included
    exact = pull(server.stub, worker.registration)
    half = pull(server.stub, worker.registration, dtype=dtype)
    assert half.version == exact.version
    assert [(t.name, list(t.shape)) for t in half.parameters] == [(t.name, list(t.shape)) for t in exact.parameters]
    for reference, encoded in zip(exact.parameters, half.parameters):
        assert reference.dtype == pb.DTYPE_FLOAT32 and encoded.dtype == dtype
        elements = int(np.prod(list(reference.shape)))
        assert len(reference.data) == 4 * elements
        assert len(encoded.data) == 2 * elements
        expected, got = as_float32(reference), as_float32(encoded)
        # Round to nearest: relative error at most half an ulp; float16 subnormals have an absolute step of 2**-24.
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=2.0**-25 if dtype == pb.DTYPE_FLOAT16 else 0.0)
    # The half-precision encoding really is lossy somewhere (it is not float32 bytes relabelled).
    assert any(
        not np.array_equal(as_float32(a), as_float32(b)) for a, b in zip(exact.parameters, half.parameters)
    )


def test_retried_push_is_applied_once(server: ServerProcess) -> None:
    """A push sent twice with the same (worker, sequence number) is applied once and answered identically."""
    worker = Worker(server)
    worker.push(worker.request(2))
    before = server.status()
    request = worker.request(11)
    first = worker.push(request)
    second = worker.push(request)
    assert first.version == before.version + 1
    assert first.global_frames == before.global_frames + 11
    assert second == first
    after = server.status()
    assert after.version == before.version + 1
    assert after.global_frames == before.global_frames + 11
    assert after.updates_applied == before.updates_applied + 1
    (mine,) = [w for w in after.workers if w.worker_id == worker.id]
    assert mine.pushes_applied == 2
    # A number below the last applied one is a bug on the worker's side.
    lower = pb.PushGradientsRequest()
    lower.CopyFrom(request)
    lower.sequence_number = request.sequence_number - 1
    lower.base_version = after.version
    with pytest.raises(grpc.RpcError) as raised:
        worker.push(lower)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    final = server.status()
    assert (final.version, final.global_frames) == (after.version, after.global_frames)
    assert final.updates_rejected == after.updates_rejected + 1


@pytest.mark.parametrize("dtype", [pb.DTYPE_FLOAT32, pb.DTYPE_BFLOAT16], ids=["float32", "bfloat16"])
def test_push_reply_carries_weights_of_its_version(server: ServerProcess, dtype: int) -> None:
    """With reply_weights_dtype set, the push reply holds the parameters of its version, as a pull would."""
    worker = Worker(server)
    before = pull(server.stub, worker.registration, dtype=dtype)
    reply = worker.push(worker.request(4, base_version=before.version, reply_weights_dtype=dtype))
    assert reply.version == before.version + 1
    assert len(reply.parameters) == len(worker.layout)
    assert all(t.dtype == dtype for t in reply.parameters)
    after = pull(server.stub, worker.registration, dtype=dtype)
    assert after.version == reply.version
    assert raw(reply.parameters) == raw(after.parameters)
    assert raw(reply.parameters) != raw(before.parameters)  # the update did change the weights


def test_register_gives_distinct_ids_seeds_and_the_layout(server: ServerProcess) -> None:
    """RegisterWorker hands out distinct ids and seeds, and a config whose layout matches the pulled tensors."""
    registrations = [register(server.stub, f"reg-{i}") for i in range(4)]
    ids = [r.worker_id for r in registrations]
    seeds = [r.seed for r in registrations]
    assert len(set(ids)) == len(ids) and 0 not in ids
    assert len({r.worker_secret for r in registrations}) == 4 and all(len(r.worker_secret) == 32 for r in registrations)
    assert len(set(seeds)) == len(seeds)
    config = registrations[0].config
    assert all(r.config == config for r in registrations)
    assert config.algorithm == pb.ALGORITHM_A3C
    assert config.max_message_bytes > 0 and config.max_staleness > 0
    layout = config.model.layout
    assert len(layout) > 0
    assert pb.GetConfigResponse(config=config) == server.stub.GetConfig(pb.GetConfigRequest(), timeout=10)
    pulled = pull(server.stub, registrations[0])
    assert [(t.name, list(t.shape)) for t in pulled.parameters] == [(s.name, list(s.shape)) for s in layout]
    assert all(s.dtype == pb.DTYPE_FLOAT32 for s in layout)
    elements = sum(int(np.prod(list(s.shape))) for s in layout)
    assert sum(len(t.data) for t in pulled.parameters) == 4 * elements


@pytest.mark.parametrize("algorithm", [pb.ALGORITHM_ONE_STEP_Q, pb.ALGORITHM_N_STEP_Q, 42])
def test_register_with_other_algorithm_fails_precondition(server: ServerProcess, algorithm: int) -> None:
    """A worker implementing another algorithm than the server's is refused with FAILED_PRECONDITION."""
    before = len(server.status().workers)
    with pytest.raises(grpc.RpcError) as raised:
        server.stub.RegisterWorker(pb.RegisterWorkerRequest(name="q", num_envs=1, algorithm=algorithm), timeout=10)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(server.status().workers) == before
    # The server's own algorithm, named explicitly, is accepted.
    accepted = server.stub.RegisterWorker(
        pb.RegisterWorkerRequest(name="a3c", num_envs=1, algorithm=pb.ALGORITHM_A3C), timeout=10
    )
    assert accepted.worker_id > 0


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_reports_serving(server: ServerProcess, service: str) -> None:
    """The standard grpc.health.v1 service reports SERVING for the server and for the asyncrl service."""
    stub = health_pb2_grpc.HealthStub(server.channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as raised:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_service(server: ServerProcess) -> None:
    """Server reflection lists asyncrl.v1.ParameterServerService and serves its methods' descriptors."""
    database = ProtoReflectionDescriptorDatabase(server.channel)
    services = database.get_services()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    descriptor = database.FindFileContainingSymbol(SERVICE)
    (service,) = [s for s in descriptor.service if f"{descriptor.package}.{s.name}" == SERVICE]
    assert {m.name for m in service.method} == {
        "RegisterWorker", "GetConfig", "PullWeights", "PushGradients", "GetStatus", "ReportEvaluation"
    }


def test_status_lists_registered_workers(server: ServerProcess) -> None:
    """GetStatus lists every registered worker with its name, env count and applied pushes."""
    first = server.stub.RegisterWorker(pb.RegisterWorkerRequest(name="status-a", num_envs=3), timeout=10)
    second = Worker(server, "status-b")
    second.push(second.request(2))
    second.push(second.request(2))
    status = server.status()
    workers = {w.worker_id: w for w in status.workers}
    assert workers[first.worker_id].name == "status-a"
    assert workers[first.worker_id].num_envs == 3
    assert workers[first.worker_id].pushes_applied == 0
    assert workers[second.id].name == "status-b"
    assert workers[second.id].num_envs == WORKER_ENVS
    assert workers[second.id].pushes_applied == 2
    assert workers[first.worker_id].alive and workers[second.id].alive
    assert status.live_workers >= 2
    assert len(status.workers) == len(workers)  # no worker listed twice
