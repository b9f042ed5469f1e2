"""A Gaussian policy's log-probability and entropy: A3C's policy terms for continuous actions.

Mnih et al. (2016), supplementary section 9: the policy outputs the mean mu and the
variance sigma^2 of a normal distribution per action dimension, and the entropy term is
that of the normal, -1/2 (log(2 pi sigma^2) + 1) in the paper's sign convention (the
bonus beta * H adds 1/2 (log(2 pi sigma^2) + 1)). The dimensions are independent, so
log-probabilities and entropies add up over them.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(mean: torch.Tensor, variance: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, sigma^2) of each row's action, summed over its D dimensions: [N, D] each -> [N].

    `actions` must be the actions as sampled, not as clipped for the env: a clipped action
    is not what the policy drew, and its log-probability has no gradient towards the bound.
    """
    return (-0.5 * ((actions - mean).pow(2) / variance + variance.log() + LOG_2PI)).sum(-1)


def gaussian_entropy(variance: torch.Tensor) -> torch.Tensor:
    """The entropy 1/2 (log(2 pi sigma^2) + 1) of each row's Gaussian, summed over dimensions: [N, D] -> [N]."""
    return (0.5 * (variance.log() + LOG_2PI + 1.0)).sum(-1)
