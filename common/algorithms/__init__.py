"""The paper's four learning methods, and what the worker and server need to know about each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from asyncrl.common.algorithms import a3c, n_step_q, one_step_q, one_step_sarsa
from asyncrl.common.rollout import Rollout
from asyncrl.v1 import parameter_server_pb2 as pb

LossFunction = Callable[[torch.nn.Module, torch.nn.Module | None, Rollout, pb.RunConfig], Any]


@dataclass(frozen=True)
class Method:
    name: str
    wire: int  # the asyncrl.v1.Algorithm value
    # Q network, target network and epsilon-greedy exploration; otherwise an actor-critic.
    value_based: bool
    # Pushes every I_AsyncUpdate steps (async_update) instead of every t_max steps.
    one_step: bool
    # The bootstrap uses the action actually taken next (SARSA): the actor chooses ahead.
    on_policy_bootstrap: bool
    # (model, target model or None, rollout, run config) -> a loss with a .total to minimise
    loss: LossFunction

    def rollout_steps(self, config: pb.RunConfig) -> int:
        return config.async_update if self.one_step else config.t_max


METHODS: dict[str, Method] = {
    "a3c": Method(
        "a3c", pb.ALGORITHM_A3C, value_based=False, one_step=False, on_policy_bootstrap=False,
        loss=lambda model, target, rollout, c: a3c.rollout_loss(
            model, rollout, c.gamma, c.entropy_beta, c.value_loss_coef),
    ),
    "q1": Method(
        "q1", pb.ALGORITHM_ONE_STEP_Q, value_based=True, one_step=True, on_policy_bootstrap=False,
        loss=lambda model, target, rollout, c: one_step_q.rollout_loss(model, target, rollout, c.gamma),
    ),
    "sarsa1": Method(
        "sarsa1", pb.ALGORITHM_ONE_STEP_SARSA, value_based=True, one_step=True, on_policy_bootstrap=True,
        loss=lambda model, target, rollout, c: one_step_sarsa.rollout_loss(model, target, rollout, c.gamma),
    ),
    "nstep-q": Method(
        "nstep-q", pb.ALGORITHM_N_STEP_Q, value_based=True, one_step=False, on_policy_bootstrap=False,
        loss=lambda model, target, rollout, c: n_step_q.rollout_loss(model, target, rollout, c.gamma),
    ),
}
METHODS_BY_WIRE: dict[int, Method] = {method.wire: method for method in METHODS.values()}
