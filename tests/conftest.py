"""Shared fixtures: real server and worker processes on 127.0.0.1, and stubs generated from proto/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme

from asyncrl.common import checkpoint
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
TESTS = Path(__file__).resolve().parent
# For processes that make the envs written in tests/ ("cliff_env:CliffWalk-v0", "catch_env:Catch-v0").
WITH_TEST_ENVS = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}


class Process:
    """An `asyncrl` subcommand running as its own OS process, its output in a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "asyncrl", *args], stdout=self._log, stderr=subprocess.STDOUT,
            env={**CHILD_ENV, **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`asyncrl {' '.join(self.args)}` still running after {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log.close()


class ServerProcess(Process):
    """`asyncrl server` on 127.0.0.1 with a free port, with a stub once it serves."""

    def __init__(self, directory: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port_file = directory / "server.port"
        self.port_file.unlink(missing_ok=True)
        self.checkpoint_dir = directory / "checkpoints"
        super().__init__(
            ["server", "--host", "127.0.0.1", "--port", "0", "--port-file", str(self.port_file),
             "--checkpoint-dir", str(self.checkpoint_dir), *flags],
            directory / "server.log", env,
        )
        self.port = self._wait_for_port()
        self.address = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(
            self.address,
            options=[("grpc.max_send_message_length", 256 * 2**20), ("grpc.max_receive_message_length", 256 * 2**20)],
        )
        self.stub = pb_grpc.ParameterServerServiceStub(self.channel)

    def _wait_for_port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"server exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            if self.port_file.exists() and self.port_file.read_text().strip():
                return int(self.port_file.read_text())
            time.sleep(0.05)
        raise AssertionError(f"server did not serve within {timeout}s:\n{self.log()[-3000:]}")

    def status(self) -> pb.GetStatusResponse:
        return self.stub.GetStatus(pb.GetStatusRequest(), timeout=10)

    def stop(self) -> None:
        self.channel.close()
        super().stop()


def run_to_completion(directory: Path, server_flags: list[str], envs: int = 4, timeout: float = 420,
                      eval_workers: int = 0):
    """A server, 2 worker processes and eval_workers evaluation workers (one env copy each) until training is
    done; returns (last GetStatus, final checkpoint)."""
    server = ServerProcess(directory, *server_flags, "--linger", "60", env=WITH_TEST_ENVS)
    workers = [
        Process(["worker", "--server", server.address, "--name", f"w{i}", "--envs", str(envs)],
                directory / f"w{i}.log", WITH_TEST_ENVS)
        for i in range(2)
    ] + [
        Process(["worker", "--server", server.address, "--name", f"eval{i}", "--eval"],
                directory / f"eval{i}.log", WITH_TEST_ENVS)
        for i in range(eval_workers)
    ]
    try:
        deadline = time.monotonic() + timeout
        status = server.status()
        while not status.training_done:
            assert time.monotonic() < deadline, f"no result in {timeout}s: {status}"
            time.sleep(0.5)
            status = server.status()
        for worker in workers:
            assert worker.wait(timeout=60) == 0, worker.log()[-2000:]
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
    _, state = checkpoint.load_latest(server.checkpoint_dir)
    return status, state


def start_worker(directory: Path, address: str, name: str, *flags: str) -> Process:
    return Process(["worker", "--server", address, "--name", name, *flags], directory / f"{name}.log")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Starts servers (stopped at teardown): server_factory(*flags, directory=None)."""
    started: list[ServerProcess] = []

    def start(*flags: str, directory: Path | None = None) -> ServerProcess:
        server = ServerProcess(directory or tmp_path / f"server{len(started)}", *flags)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator:
    """Starts workers (stopped at teardown): worker_factory(address, name, *flags)."""
    started: list[Process] = []

    def start(address: str, name: str, *flags: str) -> Process:
        worker = start_worker(tmp_path, address, name, *flags)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def register(stub: pb_grpc.ParameterServerServiceStub, name: str = "test") -> pb.RegisterWorkerResponse:
    return stub.RegisterWorker(pb.RegisterWorkerRequest(name=name, num_envs=1), timeout=10)


def pull(stub: pb_grpc.ParameterServerServiceStub, worker: pb.RegisterWorkerResponse, have_version: int = -1,
         dtype: int = pb.DTYPE_FLOAT32) -> pb.PullWeightsResponse:
    """PullWeights as the registered worker (its id and secret)."""
    return stub.PullWeights(pb.PullWeightsRequest(worker_id=worker.worker_id, have_version=have_version, dtype=dtype,
                                                  worker_secret=worker.worker_secret), timeout=10)


TOKEN = "s3cret-token-for-tests"


class Pki:
    """PEM files: the server's CA and certificate, an untrusted CA, and a client CA with one client's certificate."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        server_ca, other_ca, client_ca = trustme.CA(), trustme.CA(), trustme.CA()
        self.ca = self._write("ca.pem", server_ca.cert_pem)
        self.other_ca = self._write("other-ca.pem", other_ca.cert_pem)
        self.client_ca = self._write("client-ca.pem", client_ca.cert_pem)
        self.cert, self.key = self._issue(server_ca, "server", "127.0.0.1", "localhost")
        self.client_cert, self.client_key = self._issue(client_ca, "client", "worker.asyncrl.test")
        self.stranger_cert, self.stranger_key = self._issue(other_ca, "stranger", "stranger.asyncrl.test")
        self.token = self.directory / "token"
        self.token.write_text(TOKEN + "\n")  # a trailing newline, as secret files usually have
        self.wrong_token = self.directory / "wrong-token"
        self.wrong_token.write_text("not-" + TOKEN)

    def _write(self, name: str, blob: trustme.Blob) -> str:
        path = self.directory / name
        blob.write_to_path(str(path))
        return str(path)

    def _issue(self, ca: trustme.CA, name: str, *identities: str) -> tuple[str, str]:
        issued = ca.issue_cert(*identities)
        chain = self.directory / f"{name}.pem"
        chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        return str(chain), self._write(f"{name}.key", issued.private_key_pem)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates and tokens made at test time (tests/test_auth.py, the Node worker's TLS test)."""
    return Pki(tmp_path_factory.mktemp("pki"))


def code_of(call) -> grpc.StatusCode:
    """The status code a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalar events of every event file under directory: tag -> [(step, value)]. Checks what TensorBoard's
    reader checks: TFRecord framing, whole records, and both masked CRC-32Cs of each (length and data)."""
    import struct

    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            header = data[offset:offset + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack_from("<I", data, offset + 8)
            record = data[offset + 12:offset + 12 + length]
            (record_crc,) = struct.unpack_from("<I", data, offset + 12 + length)
            assert header_crc == masked_crc32c(header) and record_crc == masked_crc32c(record), f"bad CRC in {path}"
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
            offset += 12 + length + 4
        assert offset == len(data), f"{path} ends inside a record"
    return scalars
