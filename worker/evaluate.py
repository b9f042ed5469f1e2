"""`asyncrl eval`: play a checkpoint's policy for some episodes, report the scores, optionally record a GIF."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch

from asyncrl.common import checkpoint
from asyncrl.common.algorithms import METHODS
from asyncrl.common.config import RunConfig
from asyncrl.common.envs import make_env
from asyncrl.common.models import build_model, is_continuous, is_recurrent
from asyncrl.common.wire import model_spec

SAMPLED_Q_EPSILON = 0.05  # "sampled" play of a Q network: epsilon-greedy with this epsilon


def load_policy(path: Path, env_id: str | None) -> tuple[RunConfig, torch.nn.Module]:
    """The checkpoint's run configuration (its env replaced by env_id if given) and its trained network."""
    state = checkpoint.load(path)
    config = RunConfig(**{**state["config"], **({"env_id": env_id} if env_id else {})})
    model = build_model(model_spec(config))
    model.load_state_dict(state["store"]["parameters"])
    model.eval()
    return config, model


def play_episode(
    model: torch.nn.Module, env, greedy: bool, value_based: bool, rng: np.random.Generator, seed: int,
    max_steps: int | None = None, frames: list[np.ndarray] | None = None,
) -> float:
    """One episode's unclipped return; appends the rendered frames (initial, then one per step) if asked."""
    observation, _ = env.reset(seed=seed)
    state = model.initial_state(1) if is_recurrent(model) else None
    total, steps, done = 0.0, 0, False
    if frames is not None:
        frames.append(env.render())
    while not done and (max_steps is None or steps < max_steps):
        with torch.no_grad():
            inputs = torch.as_tensor(_as_model_input(observation)).unsqueeze(0)
            if state is not None:
                outputs, _, state = model(inputs, state)
            else:
                outputs = model(inputs)
                outputs = outputs if value_based else outputs[0]
        if is_continuous(model):
            action = _gaussian_action(outputs[0], greedy, env.action_space)
        elif greedy:
            action = int(outputs.argmax(1))
        elif value_based:
            explore = rng.random() < SAMPLED_Q_EPSILON
            action = int(rng.integers(outputs.shape[1])) if explore else int(outputs.argmax(1))
        else:
            action = int(torch.distributions.Categorical(logits=outputs[0]).sample())
        observation, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        steps += 1
        done = terminated or truncated
        if frames is not None:
            frames.append(env.render())
    return total


def _as_model_input(observation) -> np.ndarray:
    """An observation as the actor feeds it to the model: uint8 frames as they are, anything else float32
    (MuJoCo's observations are float64)."""
    array = np.asarray(observation)
    return array if array.dtype == np.uint8 else array.astype(np.float32)


def _gaussian_action(outputs: torch.Tensor, greedy: bool, space) -> np.ndarray:
    """A Gaussian policy's action for the env: its mean (greedy) or a sample, clipped to the Box's bounds."""
    mean, variance = outputs
    action = mean if greedy else torch.normal(mean, variance.sqrt())
    return np.clip(action.numpy(), space.low, space.high)


def evaluate(path: Path, env_id: str | None, episodes: int, greedy: bool, record: Path | None,
             max_steps: int | None, seed: int) -> list[float]:
    """Plays `episodes` episodes; prints mean, median, min and max; records the first as a GIF in `record`."""
    config, model = load_policy(path, env_id)
    value_based = METHODS[config.algo].value_based
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = make_env(config.env_id, config.repeat_action_probability, render_mode="rgb_array" if record else None)
    scores = []
    for episode in range(episodes):
        frames: list[np.ndarray] | None = [] if record is not None and episode == 0 else None
        scores.append(play_episode(model, env, greedy, value_based, rng, seed + episode, max_steps, frames))
        print(f"episode {episode + 1}/{episodes}: return {scores[-1]:g}", flush=True)
        if frames is not None and record is not None:
            record.mkdir(parents=True, exist_ok=True)
            gif = record / f"{config.env_id.replace('/', '_')}-episode-0.gif"
            import imageio.v3 as iio

            iio.imwrite(gif, np.stack(frames), duration=40, loop=0)
            print(f"recorded {len(frames)} frames to {gif}", flush=True)
    env.close()
    print(
        f"{config.env_id}, {'greedy' if greedy else 'sampled'} policy, {episodes} episodes: "
        f"mean {statistics.fmean(scores):.2f}  median {statistics.median(scores):.2f}  "
        f"min {min(scores):g}  max {max(scores):g}"
    )
    return scores
