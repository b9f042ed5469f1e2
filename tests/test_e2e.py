"""End to end: a server and two worker processes learn CartPole-v1 with A3C over gRPC on localhost."""

from __future__ import annotations

import time

from conftest import ServerProcess

# The documented budget: A3C with 2 workers x 4 env copies reaches a mean return of 195
# in about 40k-100k frames here; 400k leaves a wide margin for unlucky interleavings.
FRAME_BUDGET = 400_000
TARGET = 195.0


def test_two_workers_learn_cartpole(server_factory, worker_factory):
    """Training ends because the last-100 mean return reached 195 (read from GetStatus), within the budget."""
    server: ServerProcess = server_factory(
        "--env-id", "CartPole-v1", "--seed", "7", "--target-return", str(TARGET),
        "--max-frames", str(FRAME_BUDGET), "--linger", "60",
    )
    workers = [worker_factory(server.address, f"w{i}", "--envs", "4") for i in range(2)]
    deadline = time.monotonic() + 480
    status = server.status()
    while not status.training_done:
        assert time.monotonic() < deadline, f"no result in time; last status: {status}"
        time.sleep(0.5)
        status = server.status()
    assert status.episodes_completed >= 100
    assert status.mean_return_100 >= TARGET, f"budget spent first: {status}"
    assert status.global_frames < FRAME_BUDGET
    assert {w.name for w in status.workers} == {"w0", "w1"}
    assert all(w.pushes_applied > 0 for w in status.workers)
    for worker in workers:  # told that training is over, each worker exits cleanly by itself
        assert worker.wait(timeout=60) == 0
