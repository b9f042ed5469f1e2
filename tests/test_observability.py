"""Prometheus metrics and TensorBoard event files from a short real run."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ServerProcess, read_scalars, register
from prometheus_client.parser import text_string_to_metric_families

from asyncrl.common import tensors
from asyncrl.v1 import parameter_server_pb2 as pb


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """Every sample on /metrics, keyed by name{labels}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            if "le" not in sample.labels:
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def run(tmp_path: Path, server_factory, worker_factory, algo: str, metrics_port: int):
    server: ServerProcess = server_factory(
        "--algo", algo, "--metrics-port", str(metrics_port), "--tensorboard-dir", str(tmp_path / "tb"),
        "--max-frames", "12000", "--target-return", "none", "--linger", "60", "--target-update-frames", "2000",
    )
    workers = [worker_factory(server.address, f"{algo}-{i}", "--envs", "2") for i in range(2)]
    return server, workers


def wait_done(server: ServerProcess, timeout: float = 180) -> pb.GetStatusResponse:
    deadline = time.monotonic() + timeout
    while not (status := server.status()).training_done:
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    return status


def test_metrics_move_with_get_status(tmp_path: Path, server_factory, worker_factory):
    """/metrics counters bracket GetStatus while training, equal it at the end, and count rejections by reason."""
    port = free_port()
    server, workers = run(tmp_path, server_factory, worker_factory, "a3c", port)
    before = scrape(port)
    status = server.status()
    after = scrape(port)
    assert before["asyncrl_updates_applied_total"] <= status.updates_applied <= after["asyncrl_updates_applied_total"]
    assert before["asyncrl_global_frames_total"] <= status.global_frames <= after["asyncrl_global_frames_total"]

    bad = register(server.stub, "bad")
    nan_gradients = [pb.Tensor(name=s.name, dtype=pb.DTYPE_FLOAT32, shape=s.shape,
                               data=tensors.encode(s.name, __import__("torch").full(tuple(s.shape), float("nan"))).data)
                     for s in bad.config.model.layout]
    with pytest.raises(Exception):
        server.stub.PushGradients(pb.PushGradientsRequest(worker_id=bad.worker_id, base_version=0, sequence_number=1,
                                                          frames=1, gradients=nan_gradients,
                                                          worker_secret=bad.worker_secret), timeout=10)
    final = wait_done(server)
    for worker in workers:
        assert worker.wait(timeout=60) == 0
    metrics = scrape(port)
    assert metrics["asyncrl_updates_applied_total"] == final.updates_applied == final.version
    assert metrics["asyncrl_global_frames_total"] == final.global_frames >= 12000
    assert metrics["asyncrl_version"] == final.version
    assert metrics["asyncrl_training_done"] == 1.0
    assert metrics["asyncrl_updates_rejected_total{reason=not_finite}"] == 1
    # a worker starved on a loaded machine may also have a push refused as stale; every refusal is counted
    assert final.updates_rejected == sum(value for name, value in metrics.items()
                                         if name.startswith("asyncrl_updates_rejected_total{"))
    assert metrics["asyncrl_push_staleness_versions_count"] == final.updates_applied
    # every push is timed, including those answered "training is over" without being applied
    assert metrics["asyncrl_push_latency_seconds_count"] >= final.updates_applied + final.updates_rejected
    assert metrics["asyncrl_pull_latency_seconds_count"] >= 2  # each worker's first pull at least
    assert metrics["asyncrl_mean_return_100"] == pytest.approx(final.mean_return_100)


@pytest.mark.parametrize(
    ("algo", "tags"),
    [
        ("a3c", {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/explained_variance",
                 "diagnostics/grad_norm", "diagnostics/update_ratio/policy_body.0.weight",
                 "diagnostics/update_ratio/value.bias"}),
        ("q1", {"losses/q_loss", "charts/epsilon_min", "charts/epsilon_mean", "charts/epsilon_max",
                "diagnostics/grad_norm", "diagnostics/update_ratio/q.weight"}),
    ],
)
def test_tensorboard_event_files_have_the_stable_tags(tmp_path: Path, server_factory, worker_factory, algo, tags):
    """The server's event files hold episode, rate, learning-rate and each method's loss tags, stepped by T."""
    server, workers = run(tmp_path, server_factory, worker_factory, algo, free_port())
    final = wait_done(server)
    for worker in workers:
        assert worker.wait(timeout=60) == 0
    server.stop()  # the final flush happens on shutdown
    scalars = read_scalars(tmp_path / "tb")
    expected = tags | {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
                       "charts/mean_return_100"}
    assert expected <= set(scalars), sorted(scalars)
    episodes = scalars["charts/episodic_return"]
    assert len(episodes) == final.episodes_completed
    assert all(0 < step <= final.global_frames for step, _ in episodes)
    learning_rates = [value for _, value in scalars["charts/learning_rate"]]
    assert learning_rates == sorted(learning_rates, reverse=True)  # annealed linearly towards 0
