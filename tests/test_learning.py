"""The presets learn beyond CartPole, through a real server and 2 workers: pixels (Catch) and Acrobot-v1.

These guard the defaults: a preset that stops learning fails here, in minutes, rather than
in a two-hour Pong run. Budgets are 4-8x the frames the seeded runs took when written
(Catch: ~70k frames to 0.8; Acrobot: ~40k-100k to -100).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import conftest
from conftest import ServerProcess

TESTS = Path(__file__).resolve().parent
WITH_TEST_ENVS = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}


def train_to_target(tmp_path: Path, env_id: str, target: float, budget: int, envs: int, env: dict | None = None):
    """Runs a server on env_id's preset (nothing else set but seed, target and budget) and 2 workers to the end;
    returns the final status and the server's log."""
    server = ServerProcess(tmp_path / "server", "--env-id", env_id, "--seed", "3", "--target-return", str(target),
                           "--max-frames", str(budget), "--linger", "60", env=env)
    workers = []
    try:
        for index in range(2):
            workers.append(conftest.Process(["worker", "--server", server.address, "--name", f"w{index}",
                                             "--envs", str(envs)], tmp_path / f"w{index}.log", env))
        deadline = time.monotonic() + 540
        status = server.status()
        while not status.training_done:
            assert time.monotonic() < deadline, f"no result in time; last status: {status}"
            time.sleep(0.5)
            status = server.status()
        for worker in workers:
            assert worker.wait(timeout=60) == 0
        return status, server.log()
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


def test_the_atari_preset_learns_catch_from_pixels(tmp_path):
    """Catch in 40x20 frames (tests/catch_env.py) on the Atari preset and conv net: from random (-0.6) to 0.8."""
    status, log = train_to_target(tmp_path, "catch_env:Catch-v0", 0.8, 500_000, envs=8, env=WITH_TEST_ENVS)
    assert "preset atari" in log
    assert status.mean_return_100 >= 0.8 and status.global_frames < 500_000, status
    dead = {name: value for name, value in status.metrics.items() if name.startswith("diagnostics/dead_relu/")}
    assert set(dead) == {"diagnostics/dead_relu/body_conv_1", "diagnostics/dead_relu/body_conv_3",
                         "diagnostics/dead_relu/body_fc_1"}, status.metrics
    assert all(0 <= value < 1 for value in dead.values())
    assert status.metrics["diagnostics/update_ratio/body.conv.0.weight"] > 0


def test_the_classic_preset_learns_acrobot(tmp_path):
    """Acrobot-v1 with nothing but --env-id (and a seed): a mean return of -100, SB3 A2C's level, in the budget."""
    status, log = train_to_target(tmp_path, "Acrobot-v1", -100.0, 600_000, envs=4)
    assert "preset classic" in log
    assert status.mean_return_100 >= -100 and status.global_frames < 600_000, status
    assert -1 <= status.metrics["losses/explained_variance"] <= 1
