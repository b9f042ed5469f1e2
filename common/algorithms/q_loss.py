"""What the three value-based methods share: the squared TD error of Q(s, a) against a fixed target."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QLoss:
    """The loss to minimise, and the mean Q value for logging."""

    total: torch.Tensor
    mean_q: torch.Tensor

    def metrics(self) -> dict[str, float]:
        """The parts under the stable names the server logs to TensorBoard."""
        return {"losses/q_loss": self.total.item(), "losses/mean_q": self.mean_q.item()}


def td_loss(q_values: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> QLoss:
    """0.5 * mean (y - Q(s, a))^2 over a batch: q_values [N, A], actions [N], targets [N] (constants)."""
    chosen = q_values.gather(1, actions.unsqueeze(1)).squeeze(1)
    return QLoss(total=0.5 * (targets.detach() - chosen).pow(2).mean(), mean_q=chosen.detach().mean())
