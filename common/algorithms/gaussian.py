"""A Gaussian policy's log-probability and entropy: A3C's policy terms for continuous actions.

Mnih et al. (2016), supplementary section 9: the policy outputs the mean mu and the
variance sigma^2 of a normal distribution per action dimension, and the entropy term is
that of the normal, -1/2 (log(2 pi sigma^2) + 1) in the paper's sign convention (the
bonus beta * H adds 1/2 (log(2 pi sigma^2) + 1)). The dimensions are independent, so
log-probabilities and entropies add up over them.

One addition to the paper's loss: a small weight decay on the layer that makes the bounded
mean's pre-activation (mean_weight_penalty), so that a mean pushed against a bound cannot
stay there for good (its docstring says why and what was measured).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asyncrl.common.models import GaussianHead

LOG_2PI = math.log(2 * math.pi)
MEAN_WEIGHT_DECAY = 1e-3


def gaussian_log_prob(mean: torch.Tensor, variance: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, sigma^2) of each row's action, summed over its D dimensions: [N, D] each -> [N].

    `actions` must be the actions as sampled, not as clipped for the env: a clipped action
    is not what the policy drew, and its log-probability has no gradient towards the bound.
    """
    return (-0.5 * ((actions - mean).pow(2) / variance + variance.log() + LOG_2PI)).sum(-1)


def gaussian_entropy(variance: torch.Tensor) -> torch.Tensor:
    """The entropy 1/2 (log(2 pi sigma^2) + 1) of each row's Gaussian, summed over dimensions: [N, D] -> [N]."""
    return (0.5 * (variance.log() + LOG_2PI + 1.0)).sum(-1)


def mean_weight_penalty(model: nn.Module) -> torch.Tensor:
    """MEAN_WEIGHT_DECAY x the sum of squares of the weights and biases of every Gaussian mean layer in model.

    Why: the env gets actions clipped to its bounds, so while a bound is the better action every
    sample beyond it is rewarded and the mean's pre-activation x (mu = centre + half range x
    tanh(x)) keeps growing; RMSProp's normalised steps carry it to |x| ~ 15, where tanh's gradient
    is ~1e-13 and the policy can never leave the bound. Measured on Pendulum-v1 (2 workers x 8
    copies, the continuous preset): without this term 2 of 6 runs never reached -200 in 3M frames
    and inspected failures sat at |x| ~ 15; with it, see common/presets.py. Its gradient, 2 x decay
    x w, is ~1e-3 of the policy gradient's while the mean is inside the bounds, and all there is
    when tanh has saturated, so it pulls x back to where the policy gradient acts.
    """
    squares = [parameter.pow(2).sum() for module in model.modules() if isinstance(module, GaussianHead)
               for parameter in module.mean.parameters()]
    return MEAN_WEIGHT_DECAY * torch.stack(squares).sum() if squares else torch.zeros(())
