"""Asynchronous one-step Q-learning (Algorithm 1 of Mnih et al., 2016).

For every step of the rollout (I_AsyncUpdate steps of each env copy, gradients summed):

    y = r                                    if s' is terminal
        r + gamma * max_a' Q(s', a'; theta-) otherwise (theta-: the target network)
    d theta += grad (y - Q(s, a; theta))^2

A time-limit truncation is not terminal: its final observation is s'.
"""

from __future__ import annotations

import torch

from asyncrl.common.algorithms.q_loss import QLoss, td_loss
from asyncrl.common.rollout import Rollout


def one_step_q_targets(
    rewards: torch.Tensor, terminated: torch.Tensor, successor_target_q: torch.Tensor, gamma: float
) -> torch.Tensor:
    """y [T, E] from rewards and terminals [T, E] and Q(s', .; theta-) [T, E, A]."""
    return rewards + gamma * torch.where(terminated, 0.0, successor_target_q.max(dim=-1).values)


def rollout_loss(model: torch.nn.Module, target_model: torch.nn.Module, rollout: Rollout, gamma: float) -> QLoss:
    with torch.no_grad():
        successor_q = target_model(rollout.successor_observations().flatten(0, 1)).view(*rollout.rewards.shape, -1)
    targets = one_step_q_targets(rollout.rewards, rollout.terminated, successor_q, gamma)
    return td_loss(model(rollout.observations.flatten(0, 1)), rollout.actions.flatten(), targets.flatten())
