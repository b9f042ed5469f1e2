"""Bearer token, TLS and mutual TLS against real `asyncrl server` processes on 127.0.0.1.

Certificates are made at test time with trustme: a CA that signs the server's certificate
(for 127.0.0.1), a second CA the clients do not trust, and a client CA for mutual TLS.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from asyncrl.common.config import ClientSecurity
from asyncrl.common.security import client_channel
from asyncrl.common import tensors
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc
from conftest import CHILD_ENV, Pki, Process, ServerProcess, code_of

FLAGS = ("--target-return", "none", "--checkpoint-interval", "0", "--seed", "4")
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def stub(server: ServerProcess, **security: str) -> pb_grpc.ParameterServerServiceStub:
    return pb_grpc.ParameterServerServiceStub(client_channel(server.address, ClientSecurity(**security)))


def status_of(server: ServerProcess, **security: str) -> grpc.StatusCode:
    return code_of(lambda: stub(server, **security).GetStatus(pb.GetStatusRequest(), timeout=10))


def asyncrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asyncrl", *args], capture_output=True, text=True, env=CHILD_ENV,
                          timeout=120)


# --- the bearer token ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    server = ServerProcess(tmp_path_factory.mktemp("token"), *FLAGS, "--auth-token-file", str(pki.token))
    yield server
    server.stop()


def test_calls_need_the_right_token(token_server: ServerProcess, pki: Pki):
    assert status_of(token_server) == UNAUTHENTICATED
    assert status_of(token_server, auth_token_file=str(pki.wrong_token)) == UNAUTHENTICATED
    assert status_of(token_server, auth_token_file=str(pki.token)) == grpc.StatusCode.OK
    register = pb.RegisterWorkerRequest(name="no-token", num_envs=1)
    assert code_of(lambda: stub(token_server).RegisterWorker(register, timeout=10)) == UNAUTHENTICATED


def test_a_push_without_the_token_changes_nothing(token_server: ServerProcess, pki: Pki):
    """Even with the worker's id and secret: UNAUTHENTICATED, and parameters, T and version stay as they were."""
    good = stub(token_server, auth_token_file=str(pki.token))
    worker = good.RegisterWorker(pb.RegisterWorkerRequest(name="holder", num_envs=1), timeout=10)
    pull = pb.PullWeightsRequest(worker_id=worker.worker_id, have_version=-1, worker_secret=worker.worker_secret)
    before, status_before = good.PullWeights(pull, timeout=10), good.GetStatus(pb.GetStatusRequest(), timeout=10)
    push = pb.PushGradientsRequest(
        worker_id=worker.worker_id, worker_secret=worker.worker_secret, base_version=before.version,
        sequence_number=1, frames=5,
        gradients=[tensors.encode(s.name, torch.ones(tuple(s.shape))) for s in worker.config.model.layout])
    for security in ({}, {"auth_token_file": str(pki.wrong_token)}):
        assert code_of(lambda: stub(token_server, **security).PushGradients(push, timeout=10)) == UNAUTHENTICATED
    after, status_after = good.PullWeights(pull, timeout=10), good.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert after.SerializeToString() == before.SerializeToString()
    assert (status_after.version, status_after.global_frames, status_after.updates_applied,
            status_after.updates_rejected) == (status_before.version, status_before.global_frames,
                                               status_before.updates_applied, status_before.updates_rejected)
    assert good.PushGradients(push, timeout=10).version == before.version + 1  # the same push, with the token


def test_health_stays_open_and_reflection_needs_the_token(token_server: ServerProcess, pki: Pki):
    channel = client_channel(token_server.address, ClientSecurity())
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    def list_services(security: ClientSecurity) -> list[str]:
        reflection = reflection_pb2_grpc.ServerReflectionStub(client_channel(token_server.address, security))
        replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=10)
        return [s.name for reply in replies for s in reply.list_services_response.service]

    assert code_of(lambda: list_services(ClientSecurity())) == UNAUTHENTICATED
    assert "asyncrl.v1.ParameterServerService" in list_services(ClientSecurity(auth_token_file=str(pki.token)))


def test_cli_and_worker_with_and_without_the_token(token_server: ServerProcess, pki: Pki, tmp_path: Path):
    right = asyncrl("status", "--server", token_server.address, "--auth-token-file", str(pki.token))
    assert right.returncode == 0, right.stderr
    wrong = asyncrl("status", "--server", token_server.address, "--auth-token-file", str(pki.wrong_token))
    assert wrong.returncode == 1 and "UNAUTHENTICATED" in wrong.stderr and "Traceback" not in wrong.stderr
    assert asyncrl("health", "--server", token_server.address).returncode == 0  # probes need no token
    worker = Process(["worker", "--server", token_server.address, "--name", "tokenless"], tmp_path / "tokenless.log")
    try:
        assert worker.wait(timeout=90) == 1
    finally:
        worker.stop()
    assert "refused this worker: UNAUTHENTICATED" in worker.log() and "Traceback" not in worker.log()


# --- TLS and mutual TLS ----------------------------------------------------------------------------------------


def test_tls_needs_the_servers_ca(tmp_path: Path, pki: Pki):
    server = ServerProcess(tmp_path / "tls", *FLAGS, "--tls-cert", pki.cert, "--tls-key", pki.key)
    try:
        assert status_of(server, tls_ca=pki.ca) == grpc.StatusCode.OK
        assert status_of(server, tls_ca=pki.other_ca) == grpc.StatusCode.UNAVAILABLE
        assert status_of(server) == grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port
        assert asyncrl("health", "--server", server.address, "--tls-ca", pki.ca).returncode == 0
    finally:
        server.stop()


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(tmp_path: Path, pki: Pki):
    server = ServerProcess(tmp_path / "mtls", *FLAGS, "--tls-cert", pki.cert, "--tls-key", pki.key,
                           "--tls-client-ca", pki.client_ca)
    try:
        assert status_of(server, tls_ca=pki.ca) == grpc.StatusCode.UNAVAILABLE
        assert status_of(server, tls_ca=pki.ca, tls_client_cert=pki.stranger_cert,
                         tls_client_key=pki.stranger_key) == grpc.StatusCode.UNAVAILABLE
        assert status_of(server, tls_ca=pki.ca, tls_client_cert=pki.client_cert,
                         tls_client_key=pki.client_key) == grpc.StatusCode.OK
    finally:
        server.stop()


def test_train_runs_with_token_and_mutual_tls(tmp_path: Path, pki: Pki):
    """`asyncrl train` hands the server its side and the workers (and its own status calls) theirs."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncrl", "train", "--workers", "1", "--envs", "1", "--max-frames", "1500",
         "--target-return", "none", "--run-dir", str(tmp_path / "run"), "--auth-token-file", str(pki.token),
         "--tls-cert", pki.cert, "--tls-key", pki.key, "--tls-client-ca", pki.client_ca, "--tls-ca", pki.ca,
         "--tls-client-cert", pki.client_cert, "--tls-client-key", pki.client_key],
        capture_output=True, text=True, env=CHILD_ENV, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "finished" in result.stdout
    assert "mutual TLS, bearer token required" in (tmp_path / "run" / "server.log").read_text()


# --- user errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["train", "--tls-cert", "CERT", "--tls-key", "KEY"], "the launcher and its workers need the CA of --tls-cert"),
    (["--auth-token-file", "/nonexistent/token"], "--auth-token-file (ASYNCRL_AUTH_TOKEN_FILE) = '/nonexistent/token': "
                                                  "cannot read it"),
    (["--tls-cert", "CERT"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "TOKEN", "--tls-key", "TOKEN"], "not a PEM file"),
    (["--tls-client-ca", "CA"], "mutual TLS needs --tls-cert and --tls-key"),
], ids=["train-tls-without-ca", "missing-token-file", "cert-without-key", "not-pem", "client-ca-without-cert"])
def test_security_mistakes_end_the_command_with_one_line(pki: Pki, flags: list[str], message: str):
    files = {"CERT": pki.cert, "KEY": pki.key, "TOKEN": str(pki.token), "CA": pki.client_ca}
    command, flags = (["train"], flags[1:]) if flags[0] == "train" else (["server", "--port", "0"], flags)
    result = asyncrl(*command, *[files.get(flag, flag) for flag in flags])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
