"""The networks, rebuilt identically on the server and on every worker from a ModelSpec."""

from __future__ import annotations

import math

import torch
from torch import nn

from asyncrl.common.config import RunConfig
from asyncrl.common.envs import env_dimensions
from asyncrl.common.tensors import layout_of
from asyncrl.v1 import parameter_server_pb2 as pb


class MLPActorCritic(nn.Module):
    """A shared tanh MLP body with a policy head (logits) and a value head, for vector observations."""

    def __init__(self, observation_size: int, num_actions: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = observation_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.policy = nn.Linear(width, num_actions)
        self.value = nn.Linear(width, 1)
        for layer in self.body:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=math.sqrt(2))
                nn.init.zeros_(layer.bias)
        # A near-uniform initial policy and a near-zero initial value keep early updates small.
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)
        nn.init.orthogonal_(self.value.weight, gain=1.0)
        nn.init.zeros_(self.value.bias)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (policy logits [B, A], state values [B]) for a batch of observations."""
        features = self.body(observations.flatten(1))
        return self.policy(features), self.value(features).squeeze(-1)


def build_model(spec: pb.ModelSpec) -> nn.Module:
    """Builds the network a ModelSpec describes (its initial weights are overwritten by the first pull)."""
    if spec.architecture != "mlp":
        raise ValueError(f"unknown model architecture {spec.architecture!r}")
    observation_size = math.prod(spec.observation_shape)
    return MLPActorCritic(observation_size, spec.num_actions, tuple(spec.hidden_sizes))


def model_spec(config: RunConfig) -> pb.ModelSpec:
    """The ModelSpec (architecture and parameter layout) for the run's environment."""
    observation_shape, num_actions = env_dimensions(config.env_id)
    spec = pb.ModelSpec(
        architecture="mlp",
        observation_shape=list(observation_shape),
        num_actions=num_actions,
        hidden_sizes=list(config.hidden_sizes),
    )
    spec.layout.extend(layout_of(build_model(spec).named_parameters()))
    return spec
