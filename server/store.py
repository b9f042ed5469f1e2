"""The update rule: shared RMSProp over the one true copy of the parameters, applied one update at a time.

From Mnih et al. (2016), section 4 and supplementary section 8, with the statistics g
shared by all workers:

    clip the gradient's global norm to max_grad_norm
    g     <- alpha * g + (1 - alpha) * grad^2           (g starts at rmsprop_init)
    theta <- theta - lr(T) * grad / sqrt(g + eps)

where lr(T) = lr_0 * (1 - T / max_frames) anneals linearly to 0 over the frame budget
(or stays lr_0 with the constant schedule). Each applied update raises the version by
one and T by the frames the push reports. For the value-based methods, the update whose
frames carry T across a multiple of I_target also copies the parameters to the target
network.

theta, g and each gradient are flat float32 vectors in the model's wire layout
(asyncrl.common.tensors.FlatLayout), so an update is a handful of whole-vector
operations however many tensors the model has.

One update in every UPDATE_RATIO_EVERY also measures, per tensor, the size of the step
against the size of the parameters (||delta theta|| / ||theta||): ~1e-3 is healthy, a
layer far below it is not learning (see asyncrl.common.diagnostics).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from asyncrl.common.config import RunConfig
from asyncrl.common.limits import INT64_MAX
from asyncrl.common.tensors import FlatLayout, flat_norm


UPDATE_RATIO_EVERY = 100


class FramesOverflow(ValueError):
    """An update whose frames would carry T past 2**63 - 1 (the int64 every message carries it in)."""


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A consistent view of the parameters: the flat vector of one version, never modified afterwards."""

    version: int
    global_frames: int
    parameters: torch.Tensor
    # The parameters as sent, by encoding: made once however many workers ask, and gone with the snapshot.
    _encoded: dict[Any, Any] = field(default_factory=dict, repr=False)
    _encode_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def encoded(self, key: Any, encode: Callable[[torch.Tensor], Any]) -> Any:
        """encode(parameters), computed at most once per key (a wire dtype) for this snapshot."""
        with self._encode_lock:
            if key not in self._encoded:
                self._encoded[key] = encode(self.parameters)
            return self._encoded[key]


class ParameterStore:
    """Parameters, optimizer state, version and T. Nothing else in asyncrl changes parameters.

    Not thread-safe for writers: its owner (server/run.py) applies one update at a time. Readers
    need no lock, since an update replaces the snapshot instead of changing it.
    """

    def __init__(self, layout: FlatLayout, parameters: torch.Tensor, config: RunConfig, has_target: bool) -> None:
        if parameters.shape != (layout.total,):
            raise ValueError(f"parameters of shape {list(parameters.shape)} for a layout of {layout.total} elements")
        self.layout = layout
        self.config = config
        self._snapshot = Snapshot(0, 0, parameters.detach().to(torch.float32).clone())
        self.square_avg = torch.full((layout.total,), config.rmsprop_init)
        # The target network is a past snapshot: (the version it was copied from, its tensors).
        self.has_target = has_target
        self._target = self._snapshot if has_target else None
        self.update_ratios: dict[str, float] = {}

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

    def apply(self, gradient: torch.Tensor, frames: int, gradient_norm: float | None = None) -> Snapshot:
        """Applies one worker's flat gradient (clipping it in place); returns the snapshot this update made.

        The gradient must already be validated (layout, finiteness). A shard's gradient is a slice
        of the whole, so it is clipped by the whole's norm, gradient_norm; without it, by its own.
        The one refusal, FramesOverflow, is checked here, where T changes; it changes nothing.
        """
        if self.global_frames + frames > INT64_MAX:
            raise FramesOverflow(f"frames {frames} would carry T={self.global_frames} past 2**63 - 1")
        if self.config.max_grad_norm > 0:  # as torch.nn.utils.clip_grad_norm_ does it
            norm = gradient_norm if gradient_norm is not None else flat_norm(gradient)
            scale = self.config.max_grad_norm / (norm + 1e-6)
            if scale < 1.0:
                gradient.mul_(scale)
        lr, decay, eps = self.learning_rate(), self.config.rmsprop_decay, self.config.rmsprop_eps
        self.square_avg.mul_(decay).addcmul_(gradient, gradient, value=1 - decay)
        updated = torch.addcdiv(self._snapshot.parameters, gradient, self.square_avg.add(eps).sqrt_(), value=-lr)
        if self.version % UPDATE_RATIO_EVERY == 0:
            self.update_ratios = self._update_ratios(self._snapshot.parameters, updated)
        before = self.global_frames
        self._snapshot = Snapshot(self.version + 1, before + frames, updated)
        interval = self.config.target_update_frames
        if self.has_target and self._snapshot.global_frames // interval > before // interval:
            self._target = self._snapshot
        return self._snapshot

    def _update_ratios(self, before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
        steps, sizes = self.layout.split(after - before), self.layout.split(before)
        return {name: float(step.norm() / size.norm().clamp_min(1e-12))
                for name, step, size in zip(self.layout.names, steps, sizes)}

    def state_dict(self) -> dict:
        """Everything needed to resume: parameters, optimizer statistics, version and T, by tensor name."""
        return {
            "parameters": self._named(self._snapshot.parameters),
            "square_avg": self._named(self.square_avg.clone()),
            "version": self._snapshot.version,
            "global_frames": self.global_frames,
            "target": None if self._target is None else {
                "version": self._target.version,
                "global_frames": self._target.global_frames,
                "parameters": self._named(self._target.parameters),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        parameters = self._flat(state["parameters"])
        self._snapshot = Snapshot(int(state["version"]), int(state["global_frames"]), parameters)
        self.square_avg = self._flat(state["square_avg"])
        target = state["target"]
        if self.has_target and target is not None:
            self._target = Snapshot(int(target["version"]), int(target["global_frames"]),
                                    self._flat(target["parameters"]))

    def _named(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.layout.names, self.layout.split(flat)))

    def _flat(self, named: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.layout.flatten(named[name] for name in self.layout.names)
