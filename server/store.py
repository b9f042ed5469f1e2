"""The update rule: shared RMSProp over the one true copy of the parameters, applied one update at a time.

From Mnih et al. (2016), section 4 and supplementary section 8, with the statistics g
shared by all workers:

    clip the gradient's global norm to max_grad_norm
    g     <- alpha * g + (1 - alpha) * grad^2
    theta <- theta - lr(T) * grad / sqrt(g + eps)

where lr(T) = lr_0 * (1 - T / max_frames) anneals linearly to 0 over the frame budget
(or stays lr_0 with the constant schedule). Each applied update raises the version by
one and T by the frames the push reports. For the value-based methods, the update whose
frames carry T across a multiple of I_target also copies the parameters to the target
network.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from asyncrl.common.config import RunConfig


@dataclass(frozen=True)
class Snapshot:
    """A consistent view of the parameters: the tensors of one version, never modified afterwards."""

    version: int
    global_frames: int
    parameters: tuple[torch.Tensor, ...]


class ParameterStore:
    """Parameters, optimizer state, version and T. Nothing else in asyncrl changes parameters."""

    def __init__(
        self, names: Sequence[str], parameters: Sequence[torch.Tensor], config: RunConfig, has_target: bool
    ) -> None:
        self.names = tuple(names)
        self.config = config
        self._snapshot = Snapshot(0, 0, tuple(p.detach().to(torch.float32).clone() for p in parameters))
        self.square_avg = [torch.zeros_like(p) for p in self._snapshot.parameters]
        # The target network is a past snapshot: (the version it was copied from, its tensors).
        self.has_target = has_target
        self._target = self._snapshot if has_target else None
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        return self._snapshot.version

    @property
    def global_frames(self) -> int:
        return self._snapshot.global_frames

    def snapshot(self) -> Snapshot:
        """The current parameters; safe to read while updates go on (updates replace, never mutate, them)."""
        return self._snapshot

    def target(self) -> Snapshot | None:
        """The target network (value-based methods), or None."""
        return self._target

    def learning_rate(self) -> float:
        if self.config.lr_schedule == "constant":
            return self.config.learning_rate
        remaining = max(0.0, 1.0 - self.global_frames / self.config.max_frames)
        return self.config.learning_rate * remaining

    def apply(self, gradients: Sequence[torch.Tensor], frames: int) -> Snapshot:
        """Applies one worker's gradients; returns the snapshot this update made (its version and T).

        The gradients must already be validated (layout, finiteness): this never refuses.
        """
        with self._lock:
            grads = list(gradients)
            if self.config.max_grad_norm > 0:
                torch.nn.utils.clip_grads_with_norm_(
                    grads, self.config.max_grad_norm, torch.nn.utils.get_total_norm(grads)
                )
            lr, decay, eps = self.learning_rate(), self.config.rmsprop_decay, self.config.rmsprop_eps
            updated = []
            for theta, grad, square_avg in zip(self._snapshot.parameters, grads, self.square_avg):
                square_avg.mul_(decay).addcmul_(grad, grad, value=1 - decay)
                updated.append(theta - lr * grad / (square_avg + eps).sqrt())
            before = self.global_frames
            self._snapshot = Snapshot(self.version + 1, before + frames, tuple(updated))
            interval = self.config.target_update_frames
            if self.has_target and self._snapshot.global_frames // interval > before // interval:
                self._target = self._snapshot
            return self._snapshot

    def state_dict(self) -> dict:
        """Everything needed to resume: parameters, optimizer statistics, version and T."""
        with self._lock:
            return {
                "parameters": dict(zip(self.names, self._snapshot.parameters)),
                "square_avg": dict(zip(self.names, (s.clone() for s in self.square_avg))),
                "version": self._snapshot.version,
                "global_frames": self.global_frames,
                "target": None if self._target is None else {
                    "version": self._target.version,
                    "global_frames": self._target.global_frames,
                    "parameters": dict(zip(self.names, self._target.parameters)),
                },
            }

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            parameters = tuple(state["parameters"][n].clone() for n in self.names)
            self._snapshot = Snapshot(int(state["version"]), int(state["global_frames"]), parameters)
            self.square_avg = [state["square_avg"][n].clone() for n in self.names]
            target = state["target"]
            if self.has_target and target is not None:
                tensors = tuple(target["parameters"][n].clone() for n in self.names)
                self._target = Snapshot(int(target["version"]), int(target["global_frames"]), tensors)
