"""How a worker picks actions: sampling A3C's softmax or Gaussian policy, epsilon-greedy on Q values per env
copy, or an evaluation worker's mode-or-sample play."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch


class Policy(Protocol):
    def choose(self, outputs: torch.Tensor, copies: Sequence[int]) -> np.ndarray:
        """One action per row of the model's action outputs (logits or Q values); copies[i] is row i's env copy."""
        ...


class SoftmaxPolicy:
    """Samples from softmax(logits) of an actor-critic model, by the Gumbel-max trick."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def choose(self, logits: torch.Tensor, copies: Sequence[int]) -> np.ndarray:
        return (logits.numpy() + self.rng.gumbel(size=logits.shape)).argmax(axis=1)


class GaussianPolicy:
    """Samples a ~ N(mu, sigma^2) per action dimension from an actor-critic model's [B, 2, D] outputs.

    The samples are returned unclipped: they are what the loss's log-probability needs; the
    actor clips them to the env's bounds only when it steps the env.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def choose(self, outputs: torch.Tensor, copies: Sequence[int]) -> np.ndarray:
        mean, variance = outputs.numpy().transpose(1, 0, 2)
        return (mean + np.sqrt(variance) * self.rng.standard_normal(mean.shape)).astype(np.float32)


class EvaluationPolicy:
    """An evaluation worker's play: the mode of the model's outputs (argmax of logits or Q values; a Gaussian
    policy's mean), or with sample a draw from the policy; for discrete actions, with probability epsilon a
    uniform random action instead (continuous actions ignore epsilon)."""

    def __init__(self, sample: bool, epsilon: float, num_actions: int, rng: np.random.Generator,
                 continuous: bool = False) -> None:
        self.sample = sample
        self.epsilon = epsilon
        self.num_actions = num_actions
        self.rng = rng
        self.continuous = continuous

    def choose(self, outputs: torch.Tensor, copies: Sequence[int]) -> np.ndarray:
        if self.continuous:  # outputs [B, 2, D]: mean and variance; the actor clips to the env's bounds
            mean, variance = outputs.numpy().transpose(1, 0, 2)
            noise = self.rng.standard_normal(mean.shape) if self.sample else 0.0
            return (mean + np.sqrt(variance) * noise).astype(np.float32)
        scores = outputs.numpy()
        if self.sample:
            scores = scores + self.rng.gumbel(size=scores.shape)
        explore = self.rng.random(len(copies)) < self.epsilon
        return np.where(explore, self.rng.integers(self.num_actions, size=len(copies)), scores.argmax(axis=1))


def draw_final_epsilon(rng: np.random.Generator, values: Sequence[float], probabilities: Sequence[float]) -> float:
    """One env copy's final exploration rate: from {0.1, 0.01, 0.5} with probabilities {0.4, 0.3, 0.3} in the paper."""
    return float(rng.choice(np.asarray(values), p=np.asarray(probabilities)))


def annealed_epsilon(final: float, global_frames: int, anneal_frames: int) -> float:
    """Linear from 1 at T = 0 to final at T = anneal_frames, then constant."""
    remaining = max(0.0, 1.0 - global_frames / anneal_frames) if anneal_frames > 0 else 0.0
    return final + (1.0 - final) * remaining


class EpsilonGreedyPolicy:
    """Greedy on Q(s, .) with probability 1 - epsilon, uniform otherwise; each env copy has its own epsilon."""

    def __init__(self, final_epsilons: Sequence[float], anneal_frames: int, num_actions: int,
                 rng: np.random.Generator) -> None:
        self.final_epsilons = np.asarray(final_epsilons, dtype=np.float64)
        self.anneal_frames = anneal_frames
        self.num_actions = num_actions
        self.rng = rng
        self.epsilons = self.final_epsilons.copy()
        self.set_global_frames(0)

    def set_global_frames(self, global_frames: int) -> None:
        """Anneals every copy's epsilon to the global frame counter T."""
        self.epsilons = np.array([annealed_epsilon(f, global_frames, self.anneal_frames) for f in self.final_epsilons])

    def choose(self, q_values: torch.Tensor, copies: Sequence[int]) -> np.ndarray:
        greedy = q_values.argmax(dim=1).numpy()
        explore = self.rng.random(len(copies)) < self.epsilons[list(copies)]
        return np.where(explore, self.rng.integers(self.num_actions, size=len(copies)), greedy)
