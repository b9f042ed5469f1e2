"""Asynchronous n-step Q-learning (Algorithm S2 of Mnih et al., 2016).

    R = 0 if s_t is terminal else max_a Q(s_t, a; theta-)
    for i in t-1 ... t_start:
        R <- r_i + gamma * R
        d theta += grad (R - Q(s_i, a_i; theta))^2

An episode cut by a time limit inside the rollout bootstraps from max_a Q(final obs, a; theta-).
"""

from __future__ import annotations

import torch

from asyncrl.common.algorithms.q_loss import QLoss, td_loss
from asyncrl.common.algorithms.returns import n_step_returns
from asyncrl.common.rollout import Rollout


def rollout_loss(model: torch.nn.Module, target_model: torch.nn.Module, rollout: Rollout, gamma: float) -> QLoss:
    cut_values = torch.zeros_like(rollout.rewards)
    with torch.no_grad():
        bootstrap_values = target_model(rollout.next_observations).max(dim=-1).values
        if rollout.truncated.any():
            cut_values[rollout.truncated] = target_model(rollout.final_observations[rollout.truncated]).max(-1).values
    returns = n_step_returns(rollout.rewards, rollout.episode_ended, cut_values, bootstrap_values, gamma)
    return td_loss(model(rollout.observations.flatten(0, 1)), rollout.actions.flatten(), returns.flatten())
