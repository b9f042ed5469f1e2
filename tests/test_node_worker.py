"""The Node.js worker in examples/node-worker against a real `asyncrl server` process.

The worker knows only proto/asyncrl/v1/parameter_server.proto: these tests check that what it
sends is what the contract and the server mean. Its pushes are applied (and change the
parameters), its gradients are those of the A3C loss as asyncrl's PyTorch code computes it,
its CartPole is gymnasium's, a push it claims is too stale is refused without touching the
model, and it survives a server restart (UNAVAILABLE, then NOT_FOUND).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from asyncrl.common import tensors
from asyncrl.common.algorithms.a3c import rollout_loss
from asyncrl.common.models import build_model
from asyncrl.common.rollout import Rollout
from asyncrl.v1 import parameter_server_pb2 as pb
from conftest import ROOT, Pki, ServerProcess, pull, register

WORKER_DIR = ROOT / "examples" / "node-worker"
# The Node worker implements the shared-body MLP (mlp_actor_critic), not the default two-body one.
NODE_RUN = ("--target-return", "none", "--network", "mlp")


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the worker's npm dependencies installed (npm ci, once, from the lockfile)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Node.js worker tests")
    if not (WORKER_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=WORKER_DIR, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return node


class NodeWorker:
    """`node worker.js` as a subprocess, its output in a log file; `summary` parses its final `done:` line."""

    def __init__(self, node: str, directory: Path, address: str, name: str, *flags: str) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            [node, str(WORKER_DIR / "worker.js"), "--server", address, "--name", name, *flags],
            cwd=directory, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"node worker {self.name} still running after {timeout}s:\n{self.log()[-4000:]}")
        finally:
            self._log.close()
        return code

    def wait_ok(self, timeout: float = 60.0) -> dict:
        code = self.wait(timeout)
        assert code == 0, f"node worker {self.name} exited with {code}:\n{self.log()[-4000:]}"
        return self.summary()

    def summary(self) -> dict:
        lines = re.findall(r"\] done: (\{.*\})$", self.log(), re.MULTILINE)
        assert lines, f"node worker {self.name} printed no summary:\n{self.log()[-4000:]}"
        return json.loads(lines[-1])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._log.close()


@pytest.fixture
def start_node(node: str, tmp_path: Path):
    started: list[NodeWorker] = []

    def start(address: str, name: str, *flags: str) -> NodeWorker:
        worker = NodeWorker(node, tmp_path, address, name, *flags)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def weights(server: ServerProcess, observer: pb.RegisterWorkerResponse) -> list[torch.Tensor]:
    reply = pull(server.stub, observer)
    layout = tensors.FlatLayout(server.stub.GetConfig(pb.GetConfigRequest(), timeout=10).config.model.layout)
    return layout.split(layout.decode(reply.parameters, "weights"))


def wait_for(predicate, what: str, timeout: float, processes=()):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        for process in processes:
            assert process.popen.poll() is None, f"{process.name} exited while waiting for {what}:\n{process.log()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)
    return result


# --- 1. a whole run: pushes applied, parameters changed -------------------------------------------


def test_node_worker_trains_until_the_server_says_done(server_factory, start_node, tmp_path):
    server = server_factory(*NODE_RUN, "--max-frames", "3000", "--seed", "5", "--linger", "30")
    observer = register(server.stub, "observer")
    before = weights(server, observer)

    worker = start_node(server.address, "node-a3c", "--log-every", "100")
    summary = worker.wait_ok(timeout=60)

    status = server.status()
    assert status.training_done
    assert status.global_frames >= 3000
    assert status.updates_rejected == 0
    (mine,) = [w for w in status.workers if w.name == "node-a3c"]
    assert mine.pushes_applied > 0
    # One worker: every push it made was applied, and every frame and episode it reported counted.
    assert mine.pushes_applied == summary["pushes"] == status.updates_applied
    assert status.global_frames == summary["frames"]
    assert status.episodes_completed == summary["episodes"] > 0
    assert summary["registrations"] == 1 and summary["aborted"] == 0

    after = weights(server, observer)
    assert all(torch.isfinite(t).all() for t in after)
    changed = [name for (name, b, a) in zip([s.name for s in observer.config.model.layout], before, after)
               if not torch.equal(b, a)]
    assert changed == [s.name for s in observer.config.model.layout], f"parameters unchanged: {changed}"
    assert "server says training is over" in worker.log()


def test_node_worker_speaks_token_and_mutual_tls(server_factory, start_node, pki: Pki):
    """With the token and a client certificate its pushes are applied; without the token it stops (exit 2)."""
    server = server_factory(*NODE_RUN, "--auth-token-file", str(pki.token), "--tls-cert", pki.cert,
                            "--tls-key", pki.key, "--tls-client-ca", pki.client_ca)
    tls = ("--tls-ca", pki.ca, "--tls-client-cert", pki.client_cert, "--tls-client-key", pki.client_key)
    worker = start_node(server.address, "node-secure", "--max-pushes", "5", "--auth-token-file", str(pki.token), *tls)
    assert worker.wait_ok(timeout=60)["pushes"] == 5
    tokenless = start_node(server.address, "node-tokenless", *tls)
    assert tokenless.wait(timeout=60) == 2
    assert "UNAUTHENTICATED" in tokenless.log()


# --- 2. the gradients are the A3C loss's; the environment is gymnasium's CartPole ---------------


def _rollout(record: dict) -> Rollout:
    steps = len(record["actions"])
    floats = lambda key, *shape: torch.tensor(record[key], dtype=torch.float32).reshape(*shape)  # noqa: E731
    return Rollout(
        observations=floats("observations", steps, 1, 4),
        actions=torch.tensor(record["actions"]).reshape(steps, 1),
        rewards=floats("rewards", steps, 1),
        terminated=torch.tensor(record["terminated"]).reshape(steps, 1),
        truncated=torch.tensor(record["truncated"]).reshape(steps, 1),
        final_observations=floats("final_observations", steps, 1, 4),
        next_observations=floats("next_observation", 1, 4),
    )


def test_node_gradients_match_pytorch_a3c_loss_and_cartpole_matches_gymnasium(server_factory, start_node, tmp_path):
    """The worker dumps its first rollouts with the weights and gradients; PyTorch recomputes them.

    A time limit of 15 steps makes episodes end both ways inside rollouts of 20 steps: terminated
    (bootstrap 0) and truncated (bootstrap from the final observation's value).
    """
    server = server_factory(*NODE_RUN, "--max-frames", "400", "--t-max", "20", "--entropy-beta", "0.05")
    config = server.stub.GetConfig(pb.GetConfigRequest(), timeout=10).config
    initial = weights(server, register(server.stub, "observer"))
    dump = tmp_path / "dump.jsonl"
    worker = start_node(server.address, "node-dump", "--dump", str(dump), "--dump-pushes", "20",
                        "--max-episode-steps", "15")
    worker.wait_ok(timeout=60)
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(records) == 20

    model = build_model(config.model)
    names = [s.name for s in config.model.layout]
    assert [n for n, _ in model.named_parameters()] == names
    # The worker decoded the pulled float32 bytes exactly.
    for name, tensor, values in zip(names, initial, records[0]["weights"]):
        assert torch.equal(torch.tensor(values, dtype=torch.float64), tensor.double().flatten()), name
    ends = {"terminated": 0, "truncated": 0}
    for index, record in enumerate(records):
        assert record["base_version"] == record["weights_version"] == index  # one worker: every push applied
        with torch.no_grad():
            for parameter, values in zip(model.parameters(), record["weights"]):
                parameter.copy_(torch.tensor(values, dtype=torch.float32).reshape(parameter.shape))
        model.zero_grad()
        loss = rollout_loss(model, _rollout(record), config.gamma, config.entropy_beta, config.value_loss_coef)
        loss.total.backward()
        for name, part in (("total", loss.total), ("policy", loss.policy), ("value", loss.value), ("entropy", loss.entropy)):
            assert record["loss"][name] == pytest.approx(part.item(), rel=1e-4, abs=1e-5), name
        for name, parameter, values in zip(names, model.parameters(), record["gradients"]):
            theirs = torch.tensor(values, dtype=torch.float64).reshape(parameter.shape)
            ours = parameter.grad.double()
            scale = ours.abs().max().item() + 1e-6
            assert (theirs - ours).abs().max().item() <= 1e-4 * scale, f"push {index}: gradient {name} differs"
        ends["terminated"] += sum(record["terminated"])
        ends["truncated"] += sum(record["truncated"])
    assert ends["terminated"] > 0 and ends["truncated"] > 0, ends

    # CartPole: replay each transition inside an episode with gymnasium's physics.
    env = gym.make("CartPole-v1").unwrapped
    env.reset(seed=0)
    transitions = 0
    for record in records:
        observations = record["observations"] + [record["next_observation"]]
        for t, action in enumerate(record["actions"]):
            assert record["rewards"][t] == 1.0
            env.state = np.array(observations[t], dtype=np.float64)
            env.steps_beyond_terminated = None
            observation, reward, terminated, _, _ = env.step(action)
            assert terminated == record["terminated"][t], f"step {t}: terminated differs"
            if record["truncated"][t]:
                np.testing.assert_allclose(observation, record["final_observations"][t], atol=1e-5)
            elif not record["terminated"][t]:
                np.testing.assert_allclose(observation, observations[t + 1], atol=1e-5)
                transitions += 1
            else:  # a new episode starts in the next observation
                assert all(abs(v) <= 0.05 for v in observations[t + 1])
    assert transitions > 200


# --- 3. ABORTED: a stale push is refused and changes nothing ------------------------------------


def test_stale_pushes_are_refused_and_the_node_workers_recover(server_factory, start_node):
    """Two Node workers with max_staleness 1; every 5th push of each claims a base version 2 behind.

    Besides the injected ones, pushes go naturally stale when the other worker's land in between.
    """
    server = server_factory(*NODE_RUN, "--max-frames", "2000", "--max-staleness", "1")
    workers = [start_node(server.address, f"node-stale-{i}", "--stale-every", "5", "--log-every", "1000")
               for i in range(2)]
    summaries = [worker.wait_ok(timeout=60) for worker in workers]

    status = server.status()
    assert status.training_done and status.global_frames >= 2000
    injected = sum(s["injected_stale"] for s in summaries)
    aborted = sum(s["aborted"] for s in summaries)
    assert injected >= 5 and all(s["aborted"] >= s["injected_stale"] for s in summaries), summaries
    # Every refusal the workers heard is counted by the server (and nothing else was refused) ...
    assert status.updates_rejected == aborted
    # ... and none of them changed the model: one version per applied push.
    assert status.version == sum(w.pushes_applied for w in status.workers)
    for worker in workers:
        assert "BUG" not in worker.log()


# --- 4. a server restart: UNAVAILABLE (retry with backoff), then NOT_FOUND (register again) -------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_node_worker_survives_a_server_restart(start_node, tmp_path):
    port = _free_port()
    flags = (*NODE_RUN, "--max-frames", "4000", "--port", str(port), "--checkpoint-interval", "0")
    servers = [ServerProcess(tmp_path / "server", *flags)]
    try:
        worker = start_node(servers[0].address, "node-restart", "--max-backoff", "0.5", "--log-every", "1000")
        wait_for(lambda: servers[0].status().global_frames >= 300, "T >= 300 on the first server", 60, (worker,))
        servers[0].stop()  # SIGTERM: checkpoints and exits; the worker sees UNAVAILABLE meanwhile
        servers.append(ServerProcess(tmp_path / "server", *flags, "--resume"))
        summary = worker.wait_ok(timeout=60)
        status = servers[1].status()
    finally:
        for server in servers:
            if server.popen.poll() is None:
                server.stop()
    assert summary["registrations"] == 2, worker.log()[-3000:]
    assert summary["retries"] >= 1
    assert "registering again" in worker.log()
    assert status.training_done and status.global_frames >= 4000
    (again,) = [w for w in status.workers if w.name == "node-restart"]
    assert again.worker_id >= 2 and again.pushes_applied > 0
