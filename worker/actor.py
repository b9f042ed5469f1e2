"""The rollout loop: E env copies acting with one policy for t_max steps, one batched forward pass a step."""

from __future__ import annotations

import numpy as np
import torch

from asyncrl.common.envs import make_env
from asyncrl.common.rollout import Rollout


class Actor:
    """E seeded env copies that keep their episodes going across rollouts.

    Each copy is reset as soon as its episode ends (terminated or truncated), so every
    step of a rollout is a real transition; finished episodes are kept until collected.
    """

    def __init__(self, env_id: str, seeds: list[int]) -> None:
        self.envs = [make_env(env_id) for _ in seeds]
        self.sampler = np.random.default_rng(seeds[0])
        first = [env.reset(seed=seed)[0] for env, seed in zip(self.envs, seeds)]
        self.observations = np.stack(first).astype(np.float32)
        self.episode_returns = [0.0] * len(seeds)
        self.episode_lengths = [0] * len(seeds)
        self.finished_episodes: list[tuple[float, int]] = []

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def rollout(self, model: torch.nn.Module, t_max: int) -> Rollout:
        """Acts t_max steps in every copy, sampling actions from the model's policy."""
        steps, copies = t_max, self.num_envs
        observations = np.empty((steps, *self.observations.shape), dtype=np.float32)
        actions = np.empty((steps, copies), dtype=np.int64)
        rewards = np.zeros((steps, copies), dtype=np.float32)
        episode_ended = np.zeros((steps, copies), dtype=bool)
        cut_values = np.zeros((steps, copies), dtype=np.float32)
        for t in range(steps):
            observations[t] = self.observations
            with torch.no_grad():
                logits, _ = model(torch.from_numpy(self.observations))
            actions[t] = self._sample(logits.numpy())
            for e, env in enumerate(self.envs):
                observation, reward, terminated, truncated, _ = env.step(int(actions[t, e]))
                rewards[t, e] = reward
                self.episode_returns[e] += float(reward)
                self.episode_lengths[e] += 1
                if terminated or truncated:
                    episode_ended[t, e] = True
                    if truncated and not terminated:
                        cut_values[t, e] = self._value(model, observation)
                    self.finished_episodes.append((self.episode_returns[e], self.episode_lengths[e]))
                    self.episode_returns[e], self.episode_lengths[e] = 0.0, 0
                    observation, _ = env.reset()
                self.observations[e] = observation
        return Rollout(
            torch.from_numpy(observations),
            torch.from_numpy(actions),
            torch.from_numpy(rewards),
            torch.from_numpy(episode_ended),
            torch.from_numpy(cut_values),
            torch.from_numpy(self.observations.copy()),
        )

    def _sample(self, logits: np.ndarray) -> np.ndarray:
        """One action per row of logits, drawn from softmax(logits) by the Gumbel-max trick."""
        return (logits + self.sampler.gumbel(size=logits.shape)).argmax(axis=1)

    def take_finished_episodes(self) -> list[tuple[float, int]]:
        """(return, length) of each episode finished since the last call."""
        finished, self.finished_episodes = self.finished_episodes, []
        return finished

    @staticmethod
    def _value(model: torch.nn.Module, observation: np.ndarray) -> float:
        with torch.no_grad():
            _, value = model(torch.as_tensor(observation, dtype=torch.float32).unsqueeze(0))
        return float(value[0])

    def close(self) -> None:
        for env in self.envs:
            env.close()
