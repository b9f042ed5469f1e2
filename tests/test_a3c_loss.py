"""The A3C n-step returns and loss against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asyncrl.common.algorithms.a3c import actor_critic_loss
from asyncrl.common.algorithms.returns import n_step_returns

GAMMA = 0.9


def returns_of(rewards, ended, cut, bootstrap):
    return n_step_returns(
        torch.tensor(rewards, dtype=torch.float32).unsqueeze(1),
        torch.tensor(ended).unsqueeze(1),
        torch.tensor(cut, dtype=torch.float32).unsqueeze(1),
        torch.tensor([bootstrap], dtype=torch.float32),
        GAMMA,
    ).squeeze(1)


def test_running_episode_bootstraps_from_the_value_after_the_last_step():
    """R_t = r_t + g r_t+1 + g^2 r_t+2 + g^3 V(s_t+3) when no episode ends inside the rollout."""
    got = returns_of([1.0, 2.0, 3.0], [False, False, False], [0, 0, 0], bootstrap=10.0)
    r2 = 3 + 0.9 * 10  # 12.0
    r1 = 2 + 0.9 * r2  # 12.8
    r0 = 1 + 0.9 * r1  # 12.52
    assert got.tolist() == pytest.approx([r0, r1, r2])


def test_terminal_state_bootstraps_from_zero_and_cuts_the_sum():
    """A terminal step at t=1: R_1 = r_1, R_0 = r_0 + g r_1; the next episode's steps use V(s_T)."""
    got = returns_of([1.0, 2.0, 3.0], [False, True, False], [0, 0, 0], bootstrap=10.0)
    assert got.tolist() == pytest.approx([1 + 0.9 * 2, 2.0, 3 + 0.9 * 10])


def test_truncated_episode_bootstraps_from_the_value_of_its_final_observation():
    """A time-limit cut at t=1 with V(final obs) = 5: R_1 = r_1 + g 5, not r_1."""
    got = returns_of([1.0, 2.0, 3.0], [False, True, False], [0, 5.0, 0], bootstrap=10.0)
    assert got.tolist() == pytest.approx([1 + 0.9 * (2 + 0.9 * 5), 2 + 0.9 * 5, 3 + 0.9 * 10])


def test_copies_are_independent():
    """Two env copies in one [T, E] rollout: each column is computed on its own."""
    got = n_step_returns(
        torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
        torch.tensor([[False, True], [False, False]]),
        torch.zeros(2, 2),
        torch.tensor([2.0, 4.0]),
        GAMMA,
    )
    assert got[:, 0].tolist() == pytest.approx([1 + 0.9 * (1 + 0.9 * 2), 1 + 0.9 * 2])
    assert got[:, 1].tolist() == pytest.approx([0.0, 1 + 0.9 * 4])


def test_actor_critic_loss_matches_a_hand_computed_batch():
    """Policy, value and entropy terms for a 2-step batch computed by hand with numpy."""
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]], requires_grad=True)
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    actions = torch.tensor([1, 0])
    returns = torch.tensor([3.0, 1.0])
    loss = actor_critic_loss(logits, values, actions, returns, entropy_beta=0.01, value_loss_coef=0.5)

    probs = np.array([[0.25, 0.75], [0.5, 0.5]])
    advantages = np.array([3.0 - 1.0, 1.0 - 2.0])
    policy = -np.mean([np.log(0.75) * advantages[0], np.log(0.5) * advantages[1]])
    value = 0.5 * np.mean(advantages**2)
    entropy = np.mean(-(probs * np.log(probs)).sum(1))
    assert loss.policy.item() == pytest.approx(policy, rel=1e-6)
    assert loss.value.item() == pytest.approx(value, rel=1e-6)
    assert loss.entropy.item() == pytest.approx(entropy, rel=1e-6)
    assert loss.total.item() == pytest.approx(policy + 0.5 * value - 0.01 * entropy, rel=1e-6)


def test_advantage_is_a_constant_in_the_policy_term():
    """The value head gets gradient only from the value loss: d total / d V = -coef * (R - V) / N."""
    logits = torch.zeros(2, 3, requires_grad=True)
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = actor_critic_loss(logits, values, torch.tensor([0, 2]), torch.tensor([3.0, 1.0]), 0.01, 0.5)
    loss.total.backward()
    assert values.grad.tolist() == pytest.approx([-0.5 * (3 - 1) / 2, -0.5 * (1 - 2) / 2])
