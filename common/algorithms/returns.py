"""Discounted n-step returns, accumulated backwards as in the paper's Algorithms S2 and S3."""

from __future__ import annotations

import torch


def n_step_returns(
    rewards: torch.Tensor,
    episode_ended: torch.Tensor,
    cut_values: torch.Tensor,
    bootstrap_values: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Discounted n-step returns for a [T, E] rollout of E env copies, computed backwards:

        R = bootstrap value after the last step
        for t = T-1 ... 0:  R = cut_values[t] if the episode ended at t;  R = r_t + gamma R

    cut_values[t] is what an episode ending at step t bootstraps from: 0 for a terminal
    state, the value of the final observation for a time-limit truncation.
    """
    returns = torch.empty_like(rewards)
    running = bootstrap_values
    for t in reversed(range(rewards.shape[0])):
        running = torch.where(episode_ended[t], cut_values[t], running)
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns
