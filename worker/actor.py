"""The rollout loop: E env copies acting with one policy for t_max steps, one batched forward pass a step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from asyncrl.common.envs import ATARI_FRAME_SKIP, is_atari, make_env
from asyncrl.common.models import is_recurrent
from asyncrl.common.rollout import Rollout
from asyncrl.worker.policies import Policy


class Actor:
    """E seeded env copies that keep their episodes going across rollouts.

    Each copy is reset as soon as its episode ends (terminated or truncated), and the
    final observation of a truncated episode is kept for its bootstrap, so no step of a
    rollout straddles two episodes (the envs are stepped one by one, not through a vector
    env, so there is no autoreset step to skip). Finished episodes are kept until collected.

    With a recurrent model the actor keeps each copy's LSTM state across rollouts and
    zeroes it when the copy's episode ends. With choose_ahead (on-policy bootstraps,
    SARSA) the action for each new state is chosen as soon as the state is seen, and
    carried into the next rollout. With clip_rewards the rollout holds rewards clipped
    to [-1, 1] for learning, and with reward_scale multiplied by it, while episode returns
    add up the env's own rewards. Continuous
    actions (a Box space) go to the env clipped to its bounds but into the rollout as the
    policy sampled them, for the loss's log-probability.
    """

    def __init__(
        self,
        env_id: str,
        seeds: list[int],
        policy: Policy,
        *,
        choose_ahead: bool = False,
        clip_rewards: bool = False,
        reward_scale: float = 1.0,
        repeat_action_probability: float = 0.0,
    ) -> None:
        self.envs = [make_env(env_id, repeat_action_probability) for _ in seeds]
        # T counts emulator frames, as in the paper: an Atari agent step repeats its action 4 times.
        self.frames_per_step = ATARI_FRAME_SKIP if is_atari(env_id) else 1
        self.policy = policy
        space = self.envs[0].action_space
        self.action_bounds = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None
        self.action_shape: tuple[int, ...] = space.shape  # () for Discrete
        self.choose_ahead = choose_ahead
        self.clip_rewards = clip_rewards
        self.reward_scale = reward_scale
        first = [env.reset(seed=seed)[0] for env, seed in zip(self.envs, seeds)]
        dtype = np.uint8 if first[0].dtype == np.uint8 else np.float32  # frames stay uint8 until the model
        self.observations = np.stack(first).astype(dtype)
        self.copies = list(range(len(seeds)))
        self.state: torch.Tensor | None = None  # recurrent state [E, 2, cells], created on first use
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
        recurrent = is_recurrent(model)
        if recurrent and self.state is None:
            self.state = model.initial_state(copies)
        initial_state = self.state.clone() if recurrent else None
        observations = np.empty((steps, *self.observations.shape), dtype=self.observations.dtype)
        final_observations = np.zeros_like(observations)
        action_dtype = np.int64 if self.action_bounds is None else np.float32
        actions = np.empty((steps, copies, *self.action_shape), dtype=action_dtype)
        final_actions = np.zeros((steps, copies), dtype=np.int64)
        rewards = np.zeros((steps, copies), dtype=np.float32)
        terminated = np.zeros((steps, copies), dtype=bool)
        truncated = np.zeros((steps, copies), dtype=bool)
        if self.choose_ahead and self.pending_actions is None:
            self.pending_actions = self._choose(model, self.observations, self.copies)
        for t in range(steps):
            observations[t] = self.observations
            if self.choose_ahead:
                actions[t] = self.pending_actions
            else:
                actions[t] = self._choose(model, self.observations, self.copies)
            for e, env in enumerate(self.envs):
                observation, reward, terminated[t, e], truncated[t, e], _ = env.step(self._env_action(actions[t, e]))
                rewards[t, e] = (np.clip(reward, -1.0, 1.0) if self.clip_rewards else reward) * self.reward_scale
                self.episode_returns[e] += float(reward)
                self.episode_lengths[e] += 1
                if terminated[t, e] or truncated[t, e]:
                    if truncated[t, e] and not terminated[t, e]:
                        final_observations[t, e] = observation
                        if self.choose_ahead:
                            final_actions[t, e] = self._choose(model, observation[None], [e])[0]
                    else:
                        truncated[t, e] = False  # terminal wins: nothing to bootstrap from
                    self.finished_episodes.append((self.episode_returns[e], self.episode_lengths[e]))
                    self.episode_returns[e], self.episode_lengths[e] = 0.0, 0
                    observation, _ = env.reset()
                self.observations[e] = observation
            if recurrent:  # a new episode starts from a zero state
                self.state[torch.from_numpy(terminated[t] | truncated[t])] = 0.0
            if self.choose_ahead:
                self.pending_actions = self._choose(model, self.observations, self.copies)
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
            initial_state=initial_state,
        )

    def _choose(self, model: torch.nn.Module, observations: np.ndarray, copies: list[int]) -> np.ndarray:
        """Actions for some copies' observations: one batched forward pass (advancing their LSTM state)."""
        with torch.no_grad():
            inputs = torch.from_numpy(observations)
            if is_recurrent(model):
                logits, _, self.state[copies] = model(inputs, self.state[copies])
                return self.policy.choose(logits, copies)
            outputs = model(inputs)
        return self.policy.choose(outputs[0] if isinstance(outputs, tuple) else outputs, copies)

    def _env_action(self, action: np.ndarray) -> int | np.ndarray:
        """The action as the env takes it: an int, or a vector clipped to the Box's bounds."""
        if self.action_bounds is None:
            return int(action)
        return np.clip(action, *self.action_bounds)

    def take_finished_episodes(self) -> list[tuple[float, int]]:
        """(return, length) of each episode finished since the last call."""
        finished, self.finished_episodes = self.finished_episodes, []
        return finished

    def close(self) -> None:
        for env in self.envs:
            env.close()
