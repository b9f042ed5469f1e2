"""Asynchronous one-step SARSA (section 4 of Mnih et al., 2016): one-step Q-learning with an on-policy target.

    y = r                                  if s' is terminal
        r + gamma * Q(s', a'; theta-)      otherwise, a' the action actually taken in s'
    d theta += grad (y - Q(s, a; theta))^2

The actor chooses a' when it sees s' (and carries it into the next rollout), so the
bootstrap uses the very action the epsilon-greedy policy then takes.
"""

from __future__ import annotations

import torch

from asyncrl.common.algorithms.q_loss import QLoss, td_loss
from asyncrl.common.rollout import Rollout


def sarsa_targets(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    successor_target_q: torch.Tensor,
    successor_actions: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """y [T, E] from rewards, terminals and a' [T, E], and Q(s', .; theta-) [T, E, A]."""
    taken = successor_target_q.gather(-1, successor_actions.unsqueeze(-1)).squeeze(-1)
    return rewards + gamma * torch.where(terminated, 0.0, taken)


def rollout_loss(model: torch.nn.Module, target_model: torch.nn.Module, rollout: Rollout, gamma: float) -> QLoss:
    with torch.no_grad():
        successor_q = target_model(rollout.successor_observations().flatten(0, 1)).view(*rollout.rewards.shape, -1)
    targets = sarsa_targets(rollout.rewards, rollout.terminated, successor_q, rollout.successor_actions(), gamma)
    return td_loss(model(rollout.observations.flatten(0, 1)), rollout.actions.flatten(), targets.flatten())
