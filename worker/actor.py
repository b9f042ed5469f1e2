"""The rollout loop: E env copies acting with one policy for t_max steps, one batched forward pass a step."""

from __future__ import annotations

import numpy as np
import torch

from asyncrl.common.envs import make_env
from asyncrl.common.rollout import Rollout
from asyncrl.worker.policies import Policy


class Actor:
    """E seeded env copies that keep their episodes going across rollouts.

    Each copy is reset as soon as its episode ends (terminated or truncated), so every
    step of a rollout is a real transition; finished episodes are kept until collected.
    With choose_ahead (on-policy bootstraps, SARSA) the action for each new state is
    chosen as soon as the state is seen, and carried into the next rollout.
    """

    def __init__(self, env_id: str, seeds: list[int], policy: Policy, choose_ahead: bool = False) -> None:
        self.envs = [make_env(env_id) for _ in seeds]
        self.policy = policy
        self.choose_ahead = choose_ahead
        first = [env.reset(seed=seed)[0] for env, seed in zip(self.envs, seeds)]
        self.observations = np.stack(first).astype(np.float32)
        self.copies = list(range(len(seeds)))
        self.pending_actions: np.ndarray | None = None
        self.episode_returns = [0.0] * len(seeds)
        self.episode_lengths = [0] * len(seeds)
        self.finished_episodes: list[tuple[float, int]] = []

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def rollout(self, model: torch.nn.Module, steps: int) -> Rollout:
        """Acts `steps` steps in every copy with the policy on the model."""
        copies = self.num_envs
        observations = np.empty((steps, *self.observations.shape), dtype=np.float32)
        final_observations = np.zeros_like(observations)
        actions = np.empty((steps, copies), dtype=np.int64)
        final_actions = np.zeros((steps, copies), dtype=np.int64)
        rewards = np.zeros((steps, copies), dtype=np.float32)
        terminated = np.zeros((steps, copies), dtype=bool)
        truncated = np.zeros((steps, copies), dtype=bool)
        if self.choose_ahead and self.pending_actions is None:
            self.pending_actions = self.policy.act(model, self.observations, self.copies)
        for t in range(steps):
            observations[t] = self.observations
            if self.choose_ahead:
                actions[t] = self.pending_actions
            else:
                actions[t] = self.policy.act(model, self.observations, self.copies)
            for e, env in enumerate(self.envs):
                observation, reward, terminated[t, e], truncated[t, e], _ = env.step(int(actions[t, e]))
                rewards[t, e] = reward
                self.episode_returns[e] += float(reward)
                self.episode_lengths[e] += 1
                if terminated[t, e] or truncated[t, e]:
                    if truncated[t, e] and not terminated[t, e]:
                        final_observations[t, e] = observation
                        if self.choose_ahead:
                            final_actions[t, e] = self.policy.act(model, observation[None].astype(np.float32), [e])[0]
                    else:
                        truncated[t, e] = False  # terminal wins: nothing to bootstrap from
                    self.finished_episodes.append((self.episode_returns[e], self.episode_lengths[e]))
                    self.episode_returns[e], self.episode_lengths[e] = 0.0, 0
                    observation, _ = env.reset()
                self.observations[e] = observation
            if self.choose_ahead:
                self.pending_actions = self.policy.act(model, self.observations, self.copies)
        return Rollout(
            observations=torch.from_numpy(observations),
            actions=torch.from_numpy(actions),
            rewards=torch.from_numpy(rewards),
            terminated=torch.from_numpy(terminated),
            truncated=torch.from_numpy(truncated),
            final_observations=torch.from_numpy(final_observations),
            next_observations=torch.from_numpy(self.observations.copy()),
            next_actions=torch.from_numpy(self.pending_actions.copy()) if self.choose_ahead else None,
            final_actions=torch.from_numpy(final_actions) if self.choose_ahead else None,
        )

    def take_finished_episodes(self) -> list[tuple[float, int]]:
        """(return, length) of each episode finished since the last call."""
        finished, self.finished_episodes = self.finished_episodes, []
        return finished

    def close(self) -> None:
        for env in self.envs:
            env.close()
