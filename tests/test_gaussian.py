"""A3C's Gaussian policy for Box actions: its loss against numpy, sampling, clipping only for the env, the wire spec."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from asyncrl.common.algorithms.a3c import actor_critic_loss, rollout_loss
from asyncrl.common.algorithms.gaussian import MEAN_WEIGHT_DECAY, gaussian_entropy, gaussian_log_prob, mean_weight_penalty
from asyncrl.common.config import RunConfig
from asyncrl.common.envs import EnvSpecError
from asyncrl.common.models import build_model, is_continuous
from asyncrl.common.wire import model_spec
from asyncrl.common.rollout import Rollout
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.actor import Actor
from asyncrl.worker.evaluate import play_episode
from asyncrl.worker.policies import GaussianPolicy

MEAN = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
VARIANCE = np.array([[0.25, 1.0, 4.0], [1.0, 0.5, 2.0]])
ACTIONS = np.array([[1.0, -3.0, 2.5], [0.1, 0.0, -1.0]])


def numpy_log_density(mean, variance, actions):
    return (-((actions - mean) ** 2) / (2 * variance) - 0.5 * np.log(2 * np.pi * variance)).sum(1)


def tensors(*arrays):
    return [torch.tensor(a, dtype=torch.float32) for a in arrays]


def test_log_prob_sums_the_normal_log_density_over_dimensions():
    mean, variance, actions = tensors(MEAN, VARIANCE, ACTIONS)
    assert gaussian_log_prob(mean, variance, actions).tolist() == pytest.approx(
        numpy_log_density(MEAN, VARIANCE, ACTIONS).tolist(), rel=1e-6)


def test_entropy_is_half_log_two_pi_e_variance_summed_over_dimensions():
    """The paper's H = 1/2 (log(2 pi sigma^2) + 1) per dimension, and torch's Normal agrees."""
    (variance,) = tensors(VARIANCE)
    expected = (0.5 * (np.log(2 * np.pi * VARIANCE) + 1)).sum(1)
    assert gaussian_entropy(variance).tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    normal = torch.distributions.Normal(torch.zeros_like(variance), variance.sqrt())
    assert gaussian_entropy(variance).tolist() == pytest.approx(normal.entropy().sum(1).tolist(), rel=1e-6)


def test_continuous_actor_critic_loss_matches_numpy():
    """Policy term -log pi(a|s) (R - V), entropy bonus and value loss, for 2 steps of 3-dimensional actions."""
    mean, variance, actions = tensors(MEAN, VARIANCE, ACTIONS)
    outputs = torch.stack([mean, variance], dim=1).requires_grad_()
    values, returns = torch.tensor([1.0, -2.0], requires_grad=True), torch.tensor([3.0, -1.0])
    loss = actor_critic_loss(outputs, values, actions, returns, entropy_beta=0.01, value_loss_coef=0.5,
                             continuous=True)

    advantages = np.array([3.0 - 1.0, -1.0 + 2.0])
    policy = -np.mean(numpy_log_density(MEAN, VARIANCE, ACTIONS) * advantages)
    entropy = np.mean((0.5 * (np.log(2 * np.pi * VARIANCE) + 1)).sum(1))
    value = 0.5 * np.mean(advantages**2)
    assert loss.policy.item() == pytest.approx(policy, rel=1e-6)
    assert loss.entropy.item() == pytest.approx(entropy, rel=1e-6)
    assert loss.total.item() == pytest.approx(policy + 0.5 * value - 0.01 * entropy, rel=1e-6)
    loss.total.backward()
    # d(-log pi)/d mu = -(a - mu) / sigma^2, times the advantage, averaged over the 2 steps
    expected_mean_grad = -(ACTIONS - MEAN) / VARIANCE * advantages[:, None] / 2
    assert outputs.grad[:, 0].numpy() == pytest.approx(expected_mean_grad, rel=1e-5)


def pendulum_config(**overrides) -> RunConfig:
    return RunConfig(preset="continuous", env_id="Pendulum-v1", **overrides)


def test_a_box_action_env_gets_a_gaussian_spec_and_value_methods_are_refused():
    spec = model_spec(pendulum_config())
    assert spec.architecture == "mlp_bounded_gaussian_actor_critic" and spec.action_kind == pb.ACTION_KIND_CONTINUOUS
    assert (spec.num_actions, spec.action_dim, list(spec.action_low), list(spec.action_high)) == (0, 1, [-2.0], [2.0])
    assert model_spec(RunConfig()).action_kind == pb.ACTION_KIND_DISCRETE  # CartPole
    for algo in ("q1", "sarsa1", "nstep-q"):
        with pytest.raises(EnvSpecError, match=f"--algo {algo} needs discrete actions"):
            model_spec(pendulum_config(algo=algo))


def test_the_network_outputs_a_mean_within_the_bounds_and_a_positive_variance():
    model = build_model(model_spec(pendulum_config()))
    outputs, values = model(torch.randn(5, 3) * 100)
    assert is_continuous(model) and outputs.shape == (5, 2, 1) and values.shape == (5,)
    assert (outputs[:, 1] > 0).all() and (outputs[:, 0].abs() <= 2.0).all()


@pytest.mark.parametrize("network", ["mlp", "atari"])
def test_the_mean_stays_within_finite_bounds_and_is_linear_where_a_bound_is_infinite(network: str):
    """mu = centre + half_range * tanh(linear): within [low, high] however large the pre-activation, and the
    linear layer's output itself on a dimension without finite bounds."""
    shape = [3] if network == "mlp" else [4, 84, 84]
    spec = pb.ModelSpec(architecture=f"{network}_bounded_gaussian_actor_critic", observation_shape=shape,
                        hidden_sizes=[8], action_kind=pb.ACTION_KIND_CONTINUOUS, action_dim=3,
                        action_low=[-2.0, 0.0, -math.inf], action_high=[2.0, 10.0, math.inf])
    model = build_model(spec)
    with torch.no_grad():
        model.policy.mean.bias.copy_(torch.tensor([1e6, -1e6, 1e6]))
    observations = torch.zeros(2, *shape) if network == "mlp" else torch.zeros(2, *shape, dtype=torch.uint8)
    mean = model(observations)[0][:, 0]
    assert mean[:, 0].tolist() == [2.0, 2.0] and mean[:, 1].tolist() == [0.0, 0.0]
    assert mean[:, 2].tolist() == pytest.approx([1e6, 1e6], rel=1e-3)
    with torch.no_grad():
        model.policy.mean.bias.zero_()
        model.policy.mean.weight.zero_()
    assert model(observations)[0][:, 0].tolist() == [[0.0, 5.0, 0.0]] * 2  # the centre of the bounds
    assert not any("centre" in name or "half_range" in name for name, _ in model.named_parameters())


def test_the_mean_weight_penalty_pulls_a_saturated_mean_back_where_the_policy_gradient_cannot():
    """A mean pushed against Pendulum's bound (pre-activation 15, mu = 2): samples beyond the bound give the
    log-probability no gradient on the mean layer any more, but the weight decay's is 2 x decay x w, so a
    descent step lowers the pre-activation."""
    model = build_model(model_spec(pendulum_config()))
    with torch.no_grad():
        model.policy.mean.bias.fill_(15.0)
    outputs, _ = model(torch.zeros(4, 3))
    mean, variance = outputs[:, 0], outputs[:, 1]
    (-gaussian_log_prob(mean, variance, torch.full((4, 1), 3.0)).sum()).backward()
    assert mean.detach().eq(2.0).all() and model.policy.mean.bias.grad.abs().max() < 1e-9
    model.zero_grad()
    penalty = mean_weight_penalty(model)
    squares = sum(p.pow(2).sum() for p in model.policy.mean.parameters())
    assert penalty.item() == pytest.approx(MEAN_WEIGHT_DECAY * squares.item())
    penalty.backward()
    assert model.policy.mean.bias.grad.item() == pytest.approx(2 * MEAN_WEIGHT_DECAY * 15.0)
    assert model.policy.variance.bias.grad is None and model.value.bias.grad is None


def test_bounds_of_the_wrong_length_are_refused():
    spec = model_spec(pendulum_config())
    del spec.action_high[:]
    with pytest.raises(ValueError, match="action bounds of 0 dimensions, action_dim 1"):
        build_model(spec)


def test_gaussian_policy_samples_from_mean_and_variance():
    outputs = torch.tensor([[[1.0, -2.0], [0.25, 4.0]]]).expand(20_000, 2, 2)
    samples = GaussianPolicy(np.random.default_rng(0)).choose(outputs, range(20_000))
    assert samples.dtype == np.float32 and samples.shape == (20_000, 2)
    assert samples.mean(0) == pytest.approx([1.0, -2.0], abs=0.05)
    assert samples.var(0) == pytest.approx([0.25, 4.0], rel=0.05)


class FixedOutputs(torch.nn.Module):
    """A Gaussian 'network' whose mean is always `mean` (variance ~0): the action it samples is known."""

    continuous = True

    def __init__(self, mean: float) -> None:
        super().__init__()
        self.mean = mean

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = observations.shape[0]
        outputs = torch.stack([torch.full((batch, 1), self.mean), torch.full((batch, 1), 1e-12)], dim=1)
        return outputs, torch.zeros(batch)


def test_the_env_gets_the_clipped_action_and_the_rollout_keeps_the_sampled_one():
    actor = Actor("Pendulum-v1", [1, 2], GaussianPolicy(np.random.default_rng(0)))
    rollout = actor.rollout(FixedOutputs(5.0), steps=3)
    assert rollout.actions.dtype == torch.float32 and rollout.actions.shape == (3, 2, 1)
    assert rollout.actions.flatten().tolist() == pytest.approx([5.0] * 6)
    assert [env.unwrapped.last_u for env in actor.envs] == [2.0, 2.0]  # Pendulum's bound
    actor.close()


def test_a_rollout_of_multi_dimensional_actions_counts_agent_steps_not_action_values():
    """T x E agent steps, whatever D: counting the [T, E, D] action values claimed D times the frames (HalfCheetah-v5's
    6 dimensions: 240 frames for 40 steps, refused by the server's bound)."""
    steps, copies, dimensions = 5, 8, 6
    rollout = Rollout(
        observations=torch.zeros(steps, copies, 17), actions=torch.zeros(steps, copies, dimensions),
        rewards=torch.zeros(steps, copies), terminated=torch.zeros(steps, copies, dtype=torch.bool),
        truncated=torch.zeros(steps, copies, dtype=torch.bool), final_observations=torch.zeros(steps, copies, 17),
        next_observations=torch.zeros(copies, 17))
    assert rollout.steps == steps * copies == 40


def test_rollout_loss_of_a_gaussian_model_has_finite_gradients():
    config = pendulum_config()
    model = build_model(model_spec(config))
    actor = Actor("Pendulum-v1", [1, 2], GaussianPolicy(np.random.default_rng(0)))
    loss = rollout_loss(model, actor.rollout(model, steps=config.t_max), config.gamma, config.entropy_beta,
                        config.value_loss_coef)
    loss.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert loss.entropy.item() == pytest.approx(0.5 * (math.log(2 * math.pi * math.log(2)) + 1), abs=0.05)
    actor.close()


def test_greedy_evaluation_plays_the_clipped_mean():
    env = gym.make("Pendulum-v1")
    play_episode(FixedOutputs(-3.0), env, greedy=True, value_based=False, rng=np.random.default_rng(0), seed=0,
                 max_steps=2)
    assert env.unwrapped.last_u == -2.0
    env.close()


@pytest.mark.parametrize("greedy", [True, False])
def test_evaluation_plays_float64_observations(greedy: bool):
    """MuJoCo envs observe in float64; the network, as in the actor, gets float32."""
    env = gym.wrappers.TransformObservation(gym.make("Pendulum-v1"), lambda o: o.astype(np.float64),
                                            gym.spaces.Box(-8.0, 8.0, (3,), np.float64))
    model = build_model(model_spec(pendulum_config()))
    score = play_episode(model, env, greedy=greedy, value_based=False, rng=np.random.default_rng(0), seed=0,
                         max_steps=3)
    assert math.isfinite(score) and abs(env.unwrapped.last_u) <= 2.0
    env.close()
