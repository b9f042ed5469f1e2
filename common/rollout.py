"""The record of t_max steps of E env copies that a worker's actor produces and an algorithm's loss consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rollout:
    """t_max consecutive steps of E env copies, time-major.

    An episode that ends inside the rollout is followed, in the same copy, by the first
    steps of the next episode; episode_ended marks the boundary and cut_values says what
    the ended episode bootstraps from (0 if terminated, V(final observation) if truncated).
    """

    observations: torch.Tensor  # [T, E, *observation_shape], the states acted in
    actions: torch.Tensor  # [T, E] int64
    rewards: torch.Tensor  # [T, E] float32
    episode_ended: torch.Tensor  # [T, E] bool, the episode ended at this step
    cut_values: torch.Tensor  # [T, E] float32, bootstrap value where episode_ended
    next_observations: torch.Tensor  # [E, *observation_shape], the states after the last step

    @property
    def frames(self) -> int:
        """Env frames this rollout covers, all copies together."""
        return self.actions.numel()
