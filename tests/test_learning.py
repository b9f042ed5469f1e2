"""The presets learn beyond CartPole, through a real server and 2 workers: pixels (Catch), Acrobot-v1 and
continuous actions (Pendulum-v1).

These guard the defaults: a preset that stops learning fails here, in minutes, rather than
in a two-hour Pong run. Budgets are 7-20x the frames the seeded runs took when written
(Catch: ~70k frames to 0.8; Acrobot: ~25k-40k to -100), under load; Pendulum's is 2.6x the
slowest of the runs of its shape in common/presets.py (355k-570k frames to -200), since its
runs vary more.
"""

from __future__ import annotations

from pathlib import Path

from conftest import run_to_completion

from asyncrl.common.config import RunConfig
from asyncrl.common.wire import model_spec


def test_the_atari_preset_learns_catch_from_pixels(tmp_path: Path):
    """Catch in 40x20 frames (tests/catch_env.py) on the Atari preset and conv net: from random (-0.6) to 0.8."""
    status, state = run_to_completion(tmp_path, ["--env-id", "catch_env:Catch-v0", "--seed", "3",
                                                 "--target-return", "0.8", "--max-frames", "500000"], envs=8,
                                      timeout=540)
    assert state["config"]["preset"] == "atari"
    assert status.mean_return_100 >= 0.8 and status.global_frames < 500_000, status
    dead = {name: value for name, value in status.metrics.items() if name.startswith("diagnostics/dead_relu/")}
    assert set(dead) == {"diagnostics/dead_relu/body_conv_1", "diagnostics/dead_relu/body_conv_3",
                         "diagnostics/dead_relu/body_fc_1"}, status.metrics
    assert all(0 <= value < 1 for value in dead.values())
    assert status.metrics["diagnostics/update_ratio/body.conv.0.weight"] > 0


def test_the_atari_preset_learns_continuous_catch_with_a_gaussian_policy(tmp_path: Path):
    """Catch with a Box action (tests/catch_env.py, the paddle's move rounded): the Atari preset and conv net with the
    Gaussian policy's heads, from random (-0.5) to 0.8."""
    status, state = run_to_completion(tmp_path, ["--env-id", "catch_env:ContinuousCatch-v0", "--seed", "3",
                                                 "--target-return", "0.8", "--max-frames", "500000"], envs=8,
                                      timeout=540)
    config = RunConfig(**{**state["config"], "hidden_sizes": tuple(state["config"]["hidden_sizes"])})
    assert config.preset == "atari" and model_spec(config).architecture == "atari_bounded_gaussian_actor_critic"
    assert status.mean_return_100 >= 0.8 and status.global_frames < 500_000, status


def test_the_classic_preset_learns_acrobot(tmp_path: Path):
    """Acrobot-v1 with nothing but --env-id (and a seed): its target -100, SB3 A2C's level, within the budget."""
    status, state = run_to_completion(tmp_path, ["--env-id", "Acrobot-v1", "--seed", "3",
                                                 "--max-frames", "600000"], envs=4, timeout=540)
    assert state["config"]["preset"] == "classic" and state["config"]["target_return"] == -100.0
    assert status.mean_return_100 >= -100 and status.global_frames < 600_000, status
    assert -1 <= status.metrics["losses/explained_variance"] <= 1


def test_the_continuous_preset_learns_pendulum(tmp_path: Path):
    """Pendulum-v1 (a Box action space: A3C with the paper's Gaussian policy) from a random policy's ~-1200 to a
    mean of -200 over the last 100 training episodes, with nothing but --env-id, a seed and the budget."""
    status, state = run_to_completion(tmp_path, ["--env-id", "Pendulum-v1", "--seed", "1",
                                                 "--max-frames", "1500000"], envs=8, timeout=540)
    assert state["config"]["preset"] == "continuous" and state["config"]["target_return"] == -200.0
    assert status.mean_return_100 >= -200 and status.global_frames < 1_500_000, status
