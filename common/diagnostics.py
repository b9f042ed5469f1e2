"""Learning diagnostics a worker measures on its own update: the signs of a network that has stopped learning.

A run whose policy stays uniform for millions of frames shows it here long before its
return does: a gradient norm far below the clipping threshold, ReLU units that never
activate on a whole rollout, a value function that explains none of the returns. The
names are the metric names pushes carry (see PushGradientsRequest.metrics) and the
server's TensorBoard tags.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

GRAD_NORM = "diagnostics/grad_norm"
DEAD_RELU_PREFIX = "diagnostics/dead_relu/"


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - Var(targets - predictions) / Var(targets): 1 is a perfect value function, 0 or below a useless one
    (NaN when the targets do not vary, e.g. a rollout with no reward)."""
    variance = targets.var(unbiased=False)
    return float("nan") if variance == 0 else float(1 - (targets - predictions).var(unbiased=False) / variance)


def gradient_norm(gradients: torch.Tensor) -> float:
    """The global L2 norm of the flat gradient before the server clips it."""
    return float(torch.linalg.vector_norm(gradients))


class DeadUnits:
    """The fraction of each ReLU layer's units that were zero for every input of a batch.

    A unit is a channel for a convolution (dead if no position of any input activates it)
    and a feature for a fully connected layer. Only forward passes inside measuring()
    count, so that the actor's one-step passes do not.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = {_metric_name(name): module for name, module in model.named_modules()
                       if isinstance(module, nn.ReLU)}
        self._alive: dict[str, torch.Tensor] | None = None
        self.fractions: dict[str, float] = {}
        for name, module in self.layers.items():
            module.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if self._alive is not None:
                positive = output.detach() > 0
                alive = (positive.flatten(2).any(-1) if output.dim() > 2 else positive).any(0)
                self._alive[name] = alive | self._alive[name] if name in self._alive else alive
        return record

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Counts the forward passes inside (an update's loss and its bootstrap), then sets fractions."""
        self._alive = {}
        try:
            yield
        finally:
            alive, self._alive = self._alive, None
            self.fractions = {name: 1.0 - float(units.float().mean()) for name, units in alive.items()}

    def metrics(self) -> dict[str, float]:
        return {DEAD_RELU_PREFIX + name: fraction for name, fraction in self.fractions.items()}


def _metric_name(module_name: str) -> str:
    return module_name.replace(".", "_")
