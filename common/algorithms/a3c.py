"""Asynchronous advantage actor-critic (A3C): n-step returns and the actor-critic loss.

Reads next to Algorithm S3 of Mnih et al. (2016):

    R = 0 if s_t is terminal else V(s_t; theta_v)            (bootstrap)
    for i in t-1 ... t_start:
        R <- r_i + gamma * R
        d theta   += grad log pi(a_i | s_i) (R - V(s_i)) + beta * grad H(pi(s_i))
        d theta_v += grad (R - V(s_i))^2

with one extension the paper's Atari games did not need: an episode cut by a time limit
(truncated, not terminated) bootstraps from the value of its final observation rather
than from 0. pi is a softmax over discrete actions, or for continuous actions the paper's
Gaussian (common/algorithms/gaussian.py): the same loss with its log-density and entropy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from asyncrl.common.algorithms.gaussian import gaussian_entropy, gaussian_log_prob, mean_weight_penalty
from asyncrl.common.algorithms.returns import n_step_returns
from asyncrl.common.diagnostics import explained_variance
from asyncrl.common.models import is_continuous, is_recurrent
from asyncrl.common.rollout import Rollout


@dataclass(frozen=True)
class ActorCriticLoss:
    """The loss to minimise, and its parts for logging."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    explained_variance: float

    def metrics(self) -> dict[str, float]:
        """The parts under the stable names the server logs to TensorBoard (cleanrl's tags)."""
        metrics = {
            "losses/policy_loss": self.policy.item(),
            "losses/value_loss": self.value.item(),
            "losses/entropy": self.entropy.item(),
        }
        if math.isfinite(self.explained_variance):
            metrics["losses/explained_variance"] = self.explained_variance
        return metrics


def actor_critic_loss(
    policy_outputs: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    entropy_beta: float,
    value_loss_coef: float,
    continuous: bool = False,
) -> ActorCriticLoss:
    """The A3C loss averaged over a batch of N steps: policy gradient with advantage R - V,
    an entropy bonus weighted by beta, and a squared-error value loss.

    values [N] and returns [N]; for discrete actions policy_outputs are logits [N, A] and
    actions [N] int64, for continuous ones (a Gaussian policy) mu and sigma^2 [N, 2, D] and
    the sampled actions [N, D]. The advantage is treated as a constant in the policy term,
    as in the paper (the value term alone trains V).
    """
    log_pi, entropies = _log_pi_and_entropy(policy_outputs, actions, continuous)
    advantages = (returns - values).detach()
    policy_loss = -(log_pi * advantages).mean()
    entropy = entropies.mean()
    value_loss = 0.5 * (returns - values).pow(2).mean()
    total = policy_loss + value_loss_coef * value_loss - entropy_beta * entropy
    return ActorCriticLoss(total=total, policy=policy_loss, value=value_loss, entropy=entropy,
                           explained_variance=explained_variance(values.detach(), returns))


def _log_pi_and_entropy(
    policy_outputs: torch.Tensor, actions: torch.Tensor, continuous: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(a_i | s_i) and H(pi(s_i)) of each of the N steps: of a softmax, or of a Gaussian."""
    if continuous:
        mean, variance = policy_outputs.unbind(1)
        return gaussian_log_prob(mean, variance, actions), gaussian_entropy(variance)
    log_probs = F.log_softmax(policy_outputs, dim=-1)
    return log_probs.gather(1, actions.unsqueeze(1)).squeeze(1), -(log_probs.exp() * log_probs).sum(-1)


def rollout_loss(model: torch.nn.Module, rollout: Rollout, gamma: float, entropy_beta: float,
                 value_loss_coef: float) -> ActorCriticLoss:
    """The A3C loss of one rollout: a batched forward pass over every step of every copy
    (for the LSTM network, an unroll over the rollout's steps from its initial state). A Gaussian
    policy's loss also carries its mean layer's weight decay (gaussian.mean_weight_penalty)."""
    cut_values = torch.zeros_like(rollout.rewards)
    if is_recurrent(model):
        policy_outputs, values, bootstrap_values = _unroll(model, rollout, cut_values)
    else:
        policy_outputs, values = model(rollout.observations.flatten(0, 1))
        with torch.no_grad():
            _, bootstrap_values = model(rollout.next_observations)
            if rollout.truncated.any():
                _, cut_values[rollout.truncated] = model(rollout.final_observations[rollout.truncated])
    returns = n_step_returns(rollout.rewards, rollout.episode_ended, cut_values, bootstrap_values, gamma)
    continuous = is_continuous(model)
    loss = actor_critic_loss(
        policy_outputs, values, rollout.actions.flatten(0, 1), returns.flatten(), entropy_beta, value_loss_coef,
        continuous=continuous,
    )
    if continuous:
        loss = dataclasses.replace(loss, total=loss.total + mean_weight_penalty(model))
    return loss


def _unroll(
    model: torch.nn.Module, rollout: Rollout, cut_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs the LSTM network through the rollout step by step, so gradients flow back through time
    to the rollout's first step. The state is zeroed after a step that ended an episode, as the
    actor did; truncated episodes' bootstrap values (into cut_values) use the state before that reset."""
    assert rollout.initial_state is not None
    state = rollout.initial_state
    logits, values = [], []
    for t in range(rollout.actions.shape[0]):
        step_logits, step_values, state = model(rollout.observations[t], state)
        logits.append(step_logits)
        values.append(step_values)
        truncated = rollout.truncated[t]
        if truncated.any():
            with torch.no_grad():
                _, cut_values[t, truncated], _ = model(rollout.final_observations[t, truncated], state[truncated])
        state = state * (~rollout.episode_ended[t]).to(state.dtype).view(-1, 1, 1)
    with torch.no_grad():
        _, bootstrap_values, _ = model(rollout.next_observations, state)
    return torch.cat(logits), torch.cat(values), bootstrap_values
