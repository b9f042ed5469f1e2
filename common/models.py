"""The networks, rebuilt identically on the server and on every worker from a ModelSpec."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

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
    """An MLP body with a policy head (logits) and a value head: A3C's network for vector observations.

    With shared_body=False the policy and the value each get their own body (as in SB3's
    and cleanrl's MLP policies). That is the default for vector observations: returns in
    the hundreds (Acrobot-v1: -100 to -500) make the value loss's gradient swamp a shared
    body, whose tanh units then saturate and the policy collapses; measured, a shared body
    never solved Acrobot in 1M frames and two bodies did in ~40k (README, learning results).
    """

    def __init__(self, observation_size: int, num_actions: int, hidden_sizes: tuple[int, ...],
                 shared_body: bool = True) -> None:
        super().__init__()
        self.shared_body = shared_body
        if shared_body:
            self.body, width = mlp_body(observation_size, hidden_sizes)
        else:
            self.policy_body, width = mlp_body(observation_size, hidden_sizes)
            self.value_body, _ = mlp_body(observation_size, hidden_sizes)
        # A near-uniform initial policy keeps early updates small.
        self.policy = _head(width, num_actions, gain=0.01)
        self.value = _head(width, 1, gain=1.0)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (policy logits [B, A], state values [B]) for a batch of observations."""
        flat = observations.flatten(1)
        if self.shared_body:
            features = self.body(flat)
            return self.policy(features), self.value(features).squeeze(-1)
        return self.policy(self.policy_body(flat)), self.value(self.value_body(flat)).squeeze(-1)


class GaussianHead(nn.Module):
    """A Gaussian policy's output as in the paper's continuous-control experiments (Mnih et al. 2016, supp. 9),
    with the mean bounded to the action space: mu = centre + half_range * tanh(linear) on each dimension with
    finite bounds (the linear layer itself where a bound is infinite), and a softplus of a linear layer for
    the variance sigma^2.

    Why bounded: the env gets actions clipped to its bounds, so an unbounded mean can drift far
    outside them (measured on Pendulum-v1, whose bounds are +-2: to +-50) where every sample is
    clipped to the same action and the policy gradient is noise; 1 of 4 seeded runs never learned.

    Returns [B, 2, D]: mu and sigma^2 of each of the D action dimensions, in one tensor so
    that the actor-critic networks keep their (policy outputs, values) shape. The mean starts
    at the centre of the bounds and the variance at softplus(0) ~ 0.69 everywhere (zero bias,
    tiny weights), and a floor of 1e-5 keeps log sigma^2 finite when the softplus underflows.
    """

    min_variance = 1e-5

    def __init__(self, width: int, action_low: Sequence[float], action_high: Sequence[float]) -> None:
        super().__init__()
        action_dim = len(action_low)
        if len(action_high) != action_dim:
            raise ValueError(f"action bounds of {action_dim} and {len(action_high)} dimensions")
        low, high = torch.tensor(action_low, dtype=torch.float32), torch.tensor(action_high, dtype=torch.float32)
        bounded = torch.isfinite(low) & torch.isfinite(high)
        # Buffers, not parameters: the bounds come from the ModelSpec and never travel as weights.
        self.register_buffer("bounded", bounded, persistent=False)
        self.register_buffer("centre", torch.where(bounded, (high + low) / 2, 0.0), persistent=False)
        self.register_buffer("half_range", torch.where(bounded, (high - low) / 2, 1.0), persistent=False)
        self.mean = _head(width, action_dim, gain=0.01)
        self.variance = _head(width, action_dim, gain=0.01)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        linear = self.mean(features)
        mean = torch.where(self.bounded, self.centre + self.half_range * torch.tanh(linear), linear)
        return torch.stack([mean, F.softplus(self.variance(features)) + self.min_variance], dim=1)


class MLPGaussianActorCritic(nn.Module):
    """A3C for continuous actions on vector observations: a Gaussian policy MLP (its mean bounded) and a separate
    value MLP.

    Separate bodies for the reason MLPActorCritic gives: returns in the hundreds (Pendulum-v1:
    -100 to -1500) would make the value gradient swamp a shared body.
    """

    continuous = True

    def __init__(self, observation_size: int, hidden_sizes: tuple[int, ...], action_low: Sequence[float],
                 action_high: Sequence[float]) -> None:
        super().__init__()
        self.policy_body, width = mlp_body(observation_size, hidden_sizes)
        self.value_body, _ = mlp_body(observation_size, hidden_sizes)
        self.policy = GaussianHead(width, action_low, action_high)
        self.value = _head(width, 1, gain=1.0)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mu and sigma^2 [B, 2, D], state values [B]) for a batch of observations."""
        flat = observations.flatten(1)
        return self.policy(self.policy_body(flat)), self.value(self.value_body(flat)).squeeze(-1)


class MLPQNetwork(nn.Module):
    """The same body with one Q value per action: the value-based methods' network."""

    def __init__(self, observation_size: int, num_actions: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.body, width = mlp_body(observation_size, hidden_sizes)
        self.q = _head(width, num_actions, gain=1.0)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Returns Q values [B, A] for a batch of observations."""
        return self.q(self.body(observations.flatten(1)))


class AtariBody(nn.Module):
    """The paper's Atari torso: conv 16 8x8/4, conv 32 4x4/2, fc 256, ReLU after each, on uint8 frames / 255.

    Orthogonal initialisation with gain sqrt(2) (as in OpenAI baselines' and SB3's Atari
    networks) rather than torch's default, which starts every layer ~1.7x too small for
    ReLUs (kaiming-uniform with a = sqrt(5)): weak initial features, and units that die.
    """

    def __init__(self, observation_shape: tuple[int, ...]) -> None:
        super().__init__()
        channels, height, width = observation_shape
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, channels, height, width)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, 256), nn.ReLU())
        self.width = 256
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(layer.weight, gain=math.sqrt(2))
                nn.init.zeros_(layer.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(frames.float() / 255.0))


class AtariActorCritic(nn.Module):
    """The Atari body with policy and value heads (A3C FF)."""

    def __init__(self, observation_shape: tuple[int, ...], num_actions: int) -> None:
        super().__init__()
        self.body = AtariBody(observation_shape)
        self.policy = _head(self.body.width, num_actions, gain=0.01)
        self.value = _head(self.body.width, 1, gain=1.0)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(observations)
        return self.policy(features), self.value(features).squeeze(-1)


class AtariGaussianActorCritic(nn.Module):
    """The Atari body with a Gaussian policy head (bounded mean, variance) and a value head: A3C FF for continuous
    actions."""

    continuous = True

    def __init__(self, observation_shape: tuple[int, ...], action_low: Sequence[float],
                 action_high: Sequence[float]) -> None:
        super().__init__()
        self.body = AtariBody(observation_shape)
        self.policy = GaussianHead(self.body.width, action_low, action_high)
        self.value = _head(self.body.width, 1, gain=1.0)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(observations)
        return self.policy(features), self.value(features).squeeze(-1)


class AtariQNetwork(nn.Module):
    """The Atari body with one Q value per action (the value-based methods)."""

    def __init__(self, observation_shape: tuple[int, ...], num_actions: int) -> None:
        super().__init__()
        self.body = AtariBody(observation_shape)
        self.q = _head(self.body.width, num_actions, gain=1.0)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.q(self.body(observations))


class AtariLSTMActorCritic(nn.Module):
    """A3C LSTM: the Atari body, then 256 LSTM cells, then policy and value heads.

    The recurrent state is a tensor [B, 2, 256] (h and c) that the caller keeps per env
    copy and passes in; forward returns the next one.
    """

    recurrent = True
    cells = 256

    def __init__(self, observation_shape: tuple[int, ...], num_actions: int) -> None:
        super().__init__()
        self.body = AtariBody(observation_shape)
        self.lstm = nn.LSTMCell(self.body.width, self.cells)
        self.policy = _head(self.cells, num_actions, gain=0.01)
        self.value = _head(self.cells, 1, gain=1.0)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 2, self.cells)

    def forward(
        self, observations: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (policy logits [B, A], values [B], next state [B, 2, 256])."""
        h, c = self.lstm(self.body(observations), (state[:, 0], state[:, 1]))
        return self.policy(h), self.value(h).squeeze(-1), torch.stack([h, c], dim=1)


def is_recurrent(model: nn.Module) -> bool:
    return getattr(model, "recurrent", False)


def is_continuous(model: nn.Module) -> bool:
    """Whether the model's policy is a Gaussian over real-valued actions (its outputs are mu and sigma^2)."""
    return getattr(model, "continuous", False)


def _bounds(spec: pb.ModelSpec, bounds: Sequence[float]) -> list[float]:
    """A continuous spec's action_low or action_high, which must have action_dim entries."""
    if len(bounds) != spec.action_dim:
        raise ValueError(f"{spec.architecture}: action bounds of {len(bounds)} dimensions, action_dim {spec.action_dim}")
    return list(bounds)


ARCHITECTURES: dict[str, Callable[[pb.ModelSpec], nn.Module]] = {
    "mlp_actor_critic": lambda s: MLPActorCritic(math.prod(s.observation_shape), s.num_actions, tuple(s.hidden_sizes)),
    "mlp_separate_actor_critic": lambda s: MLPActorCritic(
        math.prod(s.observation_shape), s.num_actions, tuple(s.hidden_sizes), shared_body=False),
    "mlp_q": lambda s: MLPQNetwork(math.prod(s.observation_shape), s.num_actions, tuple(s.hidden_sizes)),
    "atari_actor_critic": lambda s: AtariActorCritic(tuple(s.observation_shape), s.num_actions),
    "atari_q": lambda s: AtariQNetwork(tuple(s.observation_shape), s.num_actions),
    "atari_lstm_actor_critic": lambda s: AtariLSTMActorCritic(tuple(s.observation_shape), s.num_actions),
    "mlp_bounded_gaussian_actor_critic": lambda s: MLPGaussianActorCritic(
        math.prod(s.observation_shape), tuple(s.hidden_sizes), _bounds(s, s.action_low), _bounds(s, s.action_high)),
    "atari_bounded_gaussian_actor_critic": lambda s: AtariGaussianActorCritic(
        tuple(s.observation_shape), _bounds(s, s.action_low), _bounds(s, s.action_high)),
}


def build_model(spec: pb.ModelSpec) -> nn.Module:
    """Builds the network a ModelSpec describes (its initial weights are overwritten by the first pull)."""
    if spec.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown model architecture {spec.architecture!r}")
    return ARCHITECTURES[spec.architecture](spec)


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """Re-homes the model's parameters in one flat vector that they become views of.

    The vector follows model.parameters() order, which is the wire layout's (FlatLayout),
    so loading pulled weights is one copy_ into it.
    """
    parameters = list(model.parameters())
    weights = torch.cat([p.detach().reshape(-1) for p in parameters])
    for parameter, view in zip(parameters, weights.split([p.numel() for p in parameters])):
        parameter.data = view.view_as(parameter)
    return weights


def flatten_gradients(model: nn.Module) -> torch.Tensor:
    """Gives the model's parameters .grad tensors that are views of one flat zero vector, in the same order.

    Autograd accumulates into an existing .grad in place, so after backward() the vector
    holds the whole gradient; zero it before the next backward.
    """
    parameters = list(model.parameters())
    gradients = torch.zeros(sum(p.numel() for p in parameters))
    for parameter, view in zip(parameters, gradients.split([p.numel() for p in parameters])):
        parameter.grad = view.view_as(parameter)
    return gradients
