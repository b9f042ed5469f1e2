"""The networks, rebuilt identically on the server and on every worker from a ModelSpec."""

from __future__ import annotations

import math

import torch
from torch import nn

from asyncrl.common.algorithms import METHODS
from asyncrl.common.config import RunConfig
from asyncrl.common.envs import env_dimensions
from asyncrl.common.tensors import layout_of
from asyncrl.v1 import parameter_server_pb2 as pb


def mlp_body(observation_size: int, hidden_sizes: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    """tanh hidden layers (orthogonal init, as is usual for policy-gradient MLPs); returns (body, output width)."""
    layers: list[nn.Module] = []
    width = observation_size
    for hidden in hidden_sizes:
        linear = nn.Linear(width, hidden)
        nn.init.orthogonal_(linear.weight, gain=math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Tanh()]
        width = hidden
    return nn.Sequential(*layers), width


def _head(width: int, outputs: int, gain: float) -> nn.Linear:
    head = nn.Linear(width, outputs)
    nn.init.orthogonal_(head.weight, gain=gain)
    nn.init.zeros_(head.bias)
    return head


class MLPActorCritic(nn.Module):
    """An MLP body with a policy head (logits) and a value head: A3C's network for vector observations."""

    def __init__(self, observation_size: int, num_actions: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.body, width = mlp_body(observation_size, hidden_sizes)
        # A near-uniform initial policy keeps early updates small.
        self.policy = _head(width, num_actions, gain=0.01)
        self.value = _head(width, 1, gain=1.0)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (policy logits [B, A], state values [B]) for a batch of observations."""
        features = self.body(observations.flatten(1))
        return self.policy(features), self.value(features).squeeze(-1)


class MLPQNetwork(nn.Module):
    """The same body with one Q value per action: the value-based methods' network."""

    def __init__(self, observation_size: int, num_actions: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.body, width = mlp_body(observation_size, hidden_sizes)
        self.q = _head(width, num_actions, gain=1.0)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Returns Q values [B, A] for a batch of observations."""
        return self.q(self.body(observations.flatten(1)))


ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp_actor_critic": MLPActorCritic, "mlp_q": MLPQNetwork}


def build_model(spec: pb.ModelSpec) -> nn.Module:
    """Builds the network a ModelSpec describes (its initial weights are overwritten by the first pull)."""
    if spec.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown model architecture {spec.architecture!r}")
    observation_size = math.prod(spec.observation_shape)
    return ARCHITECTURES[spec.architecture](observation_size, spec.num_actions, tuple(spec.hidden_sizes))


def model_spec(config: RunConfig) -> pb.ModelSpec:
    """The ModelSpec (architecture and parameter layout) for the run's method and environment."""
    observation_shape, num_actions = env_dimensions(config.env_id)
    spec = pb.ModelSpec(
        architecture="mlp_q" if METHODS[config.algo].value_based else "mlp_actor_critic",
        observation_shape=list(observation_shape),
        num_actions=num_actions,
        hidden_sizes=list(config.hidden_sizes),
    )
    spec.layout.extend(layout_of(build_model(spec).named_parameters()))
    return spec
