"""Atari: preprocessing, FF and LSTM networks through the real server, reward clipping, eval and plot."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import CHILD_ENV, ServerProcess

from asyncrl.common.algorithms import a3c
from asyncrl.common.config import RunConfig
from asyncrl.common.envs import make_env
from asyncrl.common.models import build_model
from asyncrl.common.wire import model_spec
from asyncrl.worker.actor import Actor
from asyncrl.worker.policies import SoftmaxPolicy

PONG = "ALE/Pong-v5"


@pytest.mark.parametrize(("algo", "network"), [("a3c", "atari"), ("a3c", "atari-lstm"), ("q1", "atari")])
def test_a_pong_worker_pushes_are_accepted(server_factory, worker_factory, algo: str, network: str):
    """A worker with 2 Pong copies rolls out and its pushes are applied; T counts 4 frames per agent step."""
    server: ServerProcess = server_factory("--env-id", PONG, "--algo", algo, "--network", network,
                                           "--target-return", "none")
    worker = worker_factory(server.address, "pong", "--envs", "2")
    deadline = time.monotonic() + 180
    while not (status := server.status()).workers or status.workers[0].pushes_applied < 3:
        assert time.monotonic() < deadline, f"no pushes applied: {status}\n{worker.log()[-2000:]}"
        assert worker.popen.poll() is None, worker.log()[-3000:]
        time.sleep(0.5)
    assert status.updates_rejected == 0
    frames_per_push = 5 * 2 * 4  # t_max (or I_AsyncUpdate) steps x 2 copies x action repeat 4
    assert status.global_frames == frames_per_push * status.updates_applied
    expected_architecture = {"atari": "atari", "atari-lstm": "atari_lstm"}[network]
    config = server.stub.GetConfig(__import__("asyncrl.v1.parameter_server_pb2", fromlist=["x"]).GetConfigRequest())
    assert config.config.model.architecture.startswith(expected_architecture)
    assert config.config.clip_rewards and config.config.repeat_action_probability == 0.0


def test_preprocessing_shapes_dtype_and_sticky_actions():
    """Observations are uint8 [4, 84, 84]; sticky actions are off; frames arrive as a stack of 4."""
    env = make_env(PONG)
    observation, _ = env.reset(seed=1)
    assert observation.shape == (4, 84, 84) and observation.dtype == np.uint8
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    next_observation, *_ = env.step(0)
    assert np.array_equal(next_observation[:3], observation[1:])  # the stack shifts by one frame a step
    assert make_env(PONG, repeat_action_probability=0.25).unwrapped.ale.getFloat("repeat_action_probability") == 0.25


def test_each_agent_step_is_the_max_of_the_last_two_of_four_frames():
    """A step equals 4 raw frames with the action repeated, max-pooled over the last 2, gray, resized to 84x84."""
    env = make_env(PONG)
    env.reset(seed=3)
    raw = gym.make(PONG, frameskip=1, repeat_action_probability=0.0, full_action_space=False)
    raw.reset(seed=3)
    ale, raw_ale = env.unwrapped.ale, raw.unwrapped.ale
    raw_ale.restoreState(ale.cloneState())  # the same emulator state, past the no-op start
    for action in (2, 3, 2):
        observation, *_ = env.step(action)
        screens = []
        for _ in range(4):
            raw.step(action)
            screens.append(raw_ale.getScreenGrayscale())
        pooled = np.maximum(screens[2], screens[3])
        expected = cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA)
        assert np.array_equal(observation[-1], expected)


def test_no_op_starts_vary_between_1_and_30_frames():
    """Resets begin with a seeded random number (1..30) of no-op frames, different across seeds."""
    starts = []
    for seed in range(8):
        env = make_env(PONG)
        env.reset(seed=seed)
        starts.append(env.unwrapped.ale.getEpisodeFrameNumber())
        env.close()
    assert all(1 <= s <= 30 for s in starts) and len(set(starts)) > 2, starts


class BigRewards(gym.Env):
    """Pays 3 a step for 4 steps, then terminates."""

    observation_space = gym.spaces.Box(0, 1, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, dtype=np.float32), 3.0, self.t == 4, False, {}


gym.register("BigRewards-v0", entry_point=BigRewards)


def small_policy_model() -> torch.nn.Module:
    return build_model(model_spec(RunConfig(env_id="BigRewards-v0", hidden_sizes=(8,))))


def test_rewards_are_clipped_for_learning_but_reported_unclipped():
    """The rollout holds rewards clipped to 1; the finished episode's return is 4 x 3 = 12."""
    actor = Actor("BigRewards-v0", [0], SoftmaxPolicy(np.random.default_rng(0)), clip_rewards=True)
    rollout = actor.rollout(small_policy_model(), 4)
    assert rollout.rewards.flatten().tolist() == [1.0, 1.0, 1.0, 1.0]
    assert actor.take_finished_episodes() == [(12.0, 4)]
    unclipped = Actor("BigRewards-v0", [0], SoftmaxPolicy(np.random.default_rng(0)))
    assert unclipped.rollout(small_policy_model(), 4).rewards.flatten().tolist() == [3.0] * 4


class ShortFrames(gym.Env):
    """Random uint8 frames [4, 84, 84]; episodes of 7 steps."""

    observation_space = gym.spaces.Box(0, 255, shape=(4, 84, 84), dtype=np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.integers(0, 256, (4, 84, 84), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        return self.np_random.integers(0, 256, (4, 84, 84), dtype=np.uint8), 0.0, self.t == 7, False, {}


gym.register("ShortFrames-v0", entry_point=ShortFrames)


def test_lstm_state_carries_across_rollouts_and_resets_at_episode_ends():
    """Rollout k+1 starts from rollout k's final state; a copy whose episode just ended starts from zeros."""
    torch.manual_seed(0)
    model = build_model(model_spec(RunConfig(env_id="ShortFrames-v0", network="atari-lstm")))
    actor = Actor("ShortFrames-v0", [0, 1], SoftmaxPolicy(np.random.default_rng(0)))
    first = actor.rollout(model, 5)  # steps 1-5 of both copies' first episodes
    assert first.initial_state is not None and torch.count_nonzero(first.initial_state) == 0
    carried = actor.state.clone()
    assert torch.count_nonzero(carried) > 0
    second = actor.rollout(model, 2)  # steps 6-7: both episodes end at the last step
    assert torch.equal(second.initial_state, carried)
    assert second.episode_ended[-1].all()
    assert torch.count_nonzero(actor.state) == 0
    third = actor.rollout(model, 1)
    assert torch.count_nonzero(third.initial_state) == 0


def test_lstm_loss_backpropagates_through_the_rollout():
    """The A3C LSTM loss of the last step depends on the first step's observation (BPTT over the rollout)."""
    torch.manual_seed(0)
    model = build_model(model_spec(RunConfig(env_id="ShortFrames-v0", network="atari-lstm")))
    actor = Actor("ShortFrames-v0", [0], SoftmaxPolicy(np.random.default_rng(0)))
    rollout = actor.rollout(model, 5)
    loss = a3c.rollout_loss(model, rollout, 0.99, 0.01, 0.5)
    loss.total.backward()
    assert torch.isfinite(loss.total) and model.lstm.weight_hh.grad.abs().sum() > 0
    # Perturb only the first observation: a non-recurrent treatment would leave later steps' outputs unchanged.
    state = rollout.initial_state
    outputs = []
    for frames in (rollout.observations[0], torch.zeros_like(rollout.observations[0])):
        s = state
        _, _, s = model(frames, s)
        for t in range(1, 5):
            logits, _, s = model(rollout.observations[t], s)
        outputs.append(logits)
    assert not torch.allclose(outputs[0], outputs[1])


def asyncrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asyncrl", *args], capture_output=True, text=True, timeout=300,
                          env=CHILD_ENV)


def test_train_eval_record_and_plot(tmp_path: Path):
    """A short Pong run writes a checkpoint and a PNG curve; eval plays it and --record writes a GIF of steps + 1 frames."""
    run_dir = tmp_path / "run"
    trained = asyncrl("train", "--run-dir", str(run_dir), "--env-id", PONG, "--workers", "1", "--envs", "1",
                      "--max-frames", "400", "--target-return", "none", "--progress-interval", "1")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    png = run_dir / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png.unlink()
    plotted = asyncrl("plot", str(run_dir))
    assert plotted.returncode == 0 and png.exists()
    (checkpoint_path,) = sorted((run_dir / "checkpoints").glob("checkpoint-*.pt"))[-1:]
    evaluated = asyncrl("eval", "--checkpoint", str(checkpoint_path), "--episodes", "2", "--max-steps", "25",
                        "--record", str(tmp_path / "video"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "2 episodes: mean" in evaluated.stdout and "median" in evaluated.stdout
    (gif,) = (tmp_path / "video").glob("*.gif")
    from PIL import Image, ImageSequence

    # GIF merges identical consecutive frames into one longer frame, so count in time: 25 steps + the first
    # frame at 40 ms each.
    with Image.open(gif) as image:
        assert image.size == (160, 210)
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(image)]
    assert sum(durations) == 26 * 40 and len(durations) > 1
    missing = asyncrl("eval", "--checkpoint", str(tmp_path / "nope.pt"))
    assert missing.returncode == 2 and "--checkpoint" in missing.stderr
