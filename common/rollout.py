"""The record of t_max steps of E env copies that a worker's actor produces and an algorithm's loss consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rollout:
    """t_max consecutive steps of E env copies, time-major.

    An episode that ends inside the rollout is followed, in the same copy, by the first
    steps of the next episode. A terminated episode bootstraps from 0; a truncated one
    (time limit) from its final observation, kept in final_observations.
    """

    observations: torch.Tensor  # [T, E, *observation_shape], the states acted in (float32, or uint8 frames)
    # [T, E] int64, or [T, E, D] float32 for continuous actions: as the policy sampled them, unclipped
    actions: torch.Tensor
    rewards: torch.Tensor  # [T, E] float32
    terminated: torch.Tensor  # [T, E] bool, the episode reached a terminal state at this step
    truncated: torch.Tensor  # [T, E] bool, the episode was cut by a time limit at this step
    final_observations: torch.Tensor  # [T, E, *observation_shape], valid where truncated
    next_observations: torch.Tensor  # [E, *observation_shape], the states after the last step
    # The actions chosen in next_observations and in final_observations (where truncated),
    # for on-policy bootstraps (SARSA); None when the acting policy does not choose ahead.
    next_actions: torch.Tensor | None = None  # [E] int64
    final_actions: torch.Tensor | None = None  # [T, E] int64
    # A recurrent model's state [E, 2, cells] at the start of the rollout (zeroed where an
    # episode started there); None for feed-forward models.
    initial_state: torch.Tensor | None = None

    @property
    def steps(self) -> int:
        """Agent steps this rollout covers, all copies together (times the env's action repeat: frames): T x E, whatever
        the action's own dimensions."""
        return self.actions.shape[0] * self.actions.shape[1]

    @property
    def episode_ended(self) -> torch.Tensor:
        return self.terminated | self.truncated

    def successor_observations(self) -> torch.Tensor:
        """[T, E, *obs]: the state each step led to (the final observation where truncated).

        Where terminated, it is the next episode's first state: bootstraps must mask it out.
        """
        successors = torch.cat([self.observations[1:], self.next_observations.unsqueeze(0)])
        mask = self.truncated.view(*self.truncated.shape, *([1] * (successors.dim() - 2)))
        return torch.where(mask, self.final_observations, successors)

    def successor_actions(self) -> torch.Tensor:
        """[T, E]: the action taken in each successor state (for SARSA); needs next_actions."""
        if self.next_actions is None or self.final_actions is None:
            raise ValueError("this rollout was collected without next actions")
        successors = torch.cat([self.actions[1:], self.next_actions.unsqueeze(0)])
        return torch.where(self.truncated, self.final_actions, successors)
