"""Presets per env family, and the errors a new user meets: chosen by env, printed, stored, overridable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import TESTS, WITH_TEST_ENVS

from asyncrl.common import checkpoint
from asyncrl.common.cli import _run_config, build_parser
from asyncrl.common.config import RunConfig, TrainOptions, from_namespace, preset_baseline, to_cli_args
from asyncrl.common.launcher import csv_row
from asyncrl.common.presets import ATARI, PRESETS, REWARD_SCALES, preset_defaults
from asyncrl.common.progress import progress_line, status_report
from asyncrl.v1 import parameter_server_pb2 as pb



def resolve(*argv: str, environ: dict[str, str] | None = None) -> tuple[RunConfig, TrainOptions]:
    args = build_parser().parse_args(["train", *argv])
    os.environ.update(environ or {})
    try:
        config = _run_config(args)
        return config, from_namespace(TrainOptions, args, defaults=PRESETS[config.preset].launcher)
    finally:
        for name in environ or {}:
            del os.environ[name]


def test_the_env_chooses_the_preset_and_every_flag_overrides_it():
    cartpole, cartpole_launcher = resolve("--env-id", "CartPole-v1")
    assert cartpole == RunConfig(env_id="CartPole-v1")  # classic is RunConfig's own defaults
    assert (cartpole.preset, cartpole.target_return, cartpole_launcher.envs) == ("classic", 475.0, 4)
    assert resolve("--env-id", "Acrobot-v1")[0].target_return == -100.0
    pong, pong_launcher = resolve("--env-id", "ALE/Pong-v5")
    assert pong.preset == "atari" and pong.target_return == 18.0
    assert all(getattr(pong, name) == value for name, value in ATARI.run.items())
    assert (pong_launcher.workers, pong_launcher.envs) == (2, 8)
    overridden, launcher = resolve("--env-id", "ALE/Pong-v5", "--learning-rate", "0.002", "--max-grad-norm", "40",
                                   "--envs", "3", "--target-return", "none")
    assert (overridden.learning_rate, overridden.max_grad_norm, overridden.target_return) == (2e-3, 40.0, None)
    assert overridden.rmsprop_eps == ATARI.run["rmsprop_eps"] and launcher.envs == 3
    from_variable, _ = resolve("--env-id", "ALE/Pong-v5", environ={"ASYNCRL_RMSPROP_INIT": "0"})
    assert from_variable.rmsprop_init == 0.0
    assert resolve("--env-id", "ALE/Pong-v5", "--preset", "classic")[0] == RunConfig(
        env_id="ALE/Pong-v5", target_return=18.0)
    assert resolve("--env-id", "CartPole-v1", "--preset", "atari")[0].learning_rate == ATARI.run["learning_rate"]


def test_image_observations_get_the_atari_preset():
    os.environ["PYTHONPATH"] = WITH_TEST_ENVS["PYTHONPATH"]
    sys.path.insert(0, str(TESTS))
    try:
        assert resolve("--env-id", "catch_env:Catch-v0")[0].preset == "atari"
    finally:
        sys.path.remove(str(TESTS))


def test_box_actions_get_the_continuous_preset():
    """Pendulum-v1 (a Box action space) gets the continuous preset and its launcher defaults; flags still win."""
    config, train = resolve("--env-id", "Pendulum-v1", "--t-max", "7")
    assert config.preset == "continuous" and config.t_max == 7
    assert config.reward_scale == REWARD_SCALES["Pendulum-v1"] == 0.1 and config.target_return == -200.0
    # The reward scale is the task's: a continuous task without one learns from its rewards as they are.
    assert "reward_scale" not in preset_defaults("continuous", "InvertedPendulum-v5") and RunConfig.reward_scale == 1.0
    assert train.envs == PRESETS["continuous"].launcher["envs"]


def test_the_launcher_hands_the_server_exactly_the_resolved_config():
    """A flag set to the classic default (2e-3) on an Atari run survives the trip: the server resolves the same
    preset, then applies only what differs from it."""
    config, _ = resolve("--env-id", "ALE/Pong-v5", "--learning-rate", "0.002", "--seed", "3")
    argv = ["--preset", config.preset, *to_cli_args(config, preset_baseline(config))]
    assert argv == ["--preset", "atari", "--env-id", "ALE/Pong-v5", "--seed", "3", "--learning-rate", "0.002"]
    assert resolve(*argv)[0] == config


def asyncrl(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asyncrl", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(
    ("env_id", "named"),
    [
        ("NoSuchEnv-v0", "cannot make environment 'NoSuchEnv-v0'"),
        ("ALE/NoSuchGame-v5", "cannot make environment 'ALE/NoSuchGame-v5'"),
        ("Pendulum-v1 --algo q1", "--algo q1 needs discrete actions; Pendulum-v1's are continuous"),
        ("Blackjack-v1", "Blackjack-v1: only Box observation spaces are supported"),
        ("LunarLander-v3", "cannot make environment 'LunarLander-v3'"),  # needs box2d, not installed
        ("no_such_module:Thing-v0", "cannot make environment 'no_such_module:Thing-v0'"),
    ],
)
@pytest.mark.parametrize("command", ["train", "server"])
def test_an_env_asyncrl_cannot_train_ends_with_one_line(tmp_path, command, env_id, named):
    args = [command, "--env-id", *env_id.split()] + (["--run-dir", str(tmp_path)] if command == "train" else
                                            ["--port", "0", "--checkpoint-dir", str(tmp_path)])
    result = asyncrl(*args)
    assert result.returncode == 2, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("asyncrl")]
    assert errors == [f"asyncrl {command}: error: " + errors[0].split(": error: ", 1)[1]], result.stderr
    assert named in errors[0] and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_train_prints_its_preset_and_the_checkpoint_stores_it(tmp_path):
    result = asyncrl("train", "--env-id", "CartPole-v1", "--max-frames", "2000", "--workers", "1",
                     "--learning-rate", "0.001", "--run-dir", str(tmp_path), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "preset classic (" in result.stdout and "set by flag or environment: learning_rate=0.001" in result.stdout
    _, state = checkpoint.load_latest(tmp_path / "checkpoints")
    assert state["config"]["preset"] == "classic" and state["config"]["learning_rate"] == 1e-3
    assert "preset classic (" in (tmp_path / "server.log").read_text()


def test_no_mean_return_is_shown_before_the_first_episode():
    status = pb.GetStatusResponse(global_frames=80, episodes_completed=0, mean_return_100=0.0,
                                  metrics={"losses/entropy": 1.79})
    assert "mean_return_100=     -" in progress_line(status) and "entropy=1.790" in progress_line(status)
    assert "mean return (last 100) -" in status_report(status)
    row = csv_row(status, 1.0)
    assert row["mean_return_100"] == "" and row["entropy"] == 1.79 and row["grad_norm"] == ""
    status.episodes_completed, status.mean_return_100 = 1, 0.0
    assert "mean_return_100=   0.0" in progress_line(status) and csv_row(status, 1.0)["mean_return_100"] == 0.0
