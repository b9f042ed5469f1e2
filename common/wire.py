"""Translations between the Python configuration and its wire form in asyncrl.v1."""

from __future__ import annotations

from asyncrl.common.algorithms import METHODS
from asyncrl.common.config import ConfigError, RunConfig
from asyncrl.common.envs import Actions, EnvSpecError, env_dimensions, is_atari
from asyncrl.common.models import build_model
from asyncrl.common.tensors import FlatLayout
from asyncrl.v1 import parameter_server_pb2 as pb

# RunConfig fields a worker needs, sent as-is in the RunConfig message (same names).
WORKER_FIELDS = (
    "env_id", "gamma", "t_max", "entropy_beta", "value_loss_coef", "max_frames", "max_staleness", "async_update",
    "target_update_frames", "epsilon_values", "epsilon_probabilities", "epsilon_anneal_frames",
    "repeat_action_probability", "eval_policy", "eval_epsilon", "reward_scale",
)


def run_config_message(config: RunConfig, model: pb.ModelSpec, max_message_bytes: int) -> pb.RunConfig:
    """The RunConfig message the server sends at registration: the worker's view of the run."""
    return pb.RunConfig(
        algorithm=METHODS[config.algo].wire,
        model=model,
        max_message_bytes=max_message_bytes,
        clip_rewards=config.clip_rewards == "on" or (config.clip_rewards == "auto" and is_atari(config.env_id)),
        **{name: getattr(config, name) for name in WORKER_FIELDS},
    )


def model_spec(config: RunConfig) -> pb.ModelSpec:
    """The ModelSpec (architecture, actions and parameter layout) for the run's method and environment.

    A Box action space gets A3C's Gaussian policy; the value-based methods need a Q value
    per action, so they are refused one.
    """
    observation_shape, actions = env_dimensions(config.env_id)
    value_based = METHODS[config.algo].value_based
    if actions.continuous and value_based:
        raise EnvSpecError(f"--algo {config.algo} needs discrete actions; {config.env_id}'s are continuous "
                           f"({actions.size}-dimensional Box): use --algo a3c")
    network = config.network
    if network == "auto":
        network = "atari" if len(observation_shape) == 3 else "mlp" if value_based else "mlp-separate"
    if not network.startswith("mlp") and len(observation_shape) != 3:
        raise ConfigError(f"--network {network}: needs image observations [C, H, W]; {config.env_id} has "
                          f"{list(observation_shape)}")
    if actions.continuous:
        spec = _continuous_spec(network, config, observation_shape, actions)
    else:
        heads = "q" if value_based else "actor_critic"
        spec = pb.ModelSpec(
            architecture=f"{network.replace('-', '_')}_{heads}",
            observation_shape=list(observation_shape),
            num_actions=actions.size,
            hidden_sizes=list(config.hidden_sizes),
            action_kind=pb.ACTION_KIND_DISCRETE,
        )
    spec.layout.extend(FlatLayout.of(build_model(spec).named_parameters()).specs)
    return spec


def _continuous_spec(network: str, config: RunConfig, observation_shape: tuple[int, ...],
                     actions: Actions) -> pb.ModelSpec:
    """A Gaussian policy's spec: its MLP always has separate policy and value bodies, its conv net one shared body."""
    if network not in ("mlp-separate", "atari"):
        raise ConfigError(f"--network {network}: continuous actions ({config.env_id}) need mlp-separate (vector "
                          "observations) or atari (images)")
    return pb.ModelSpec(
        architecture=f"{'mlp' if network == 'mlp-separate' else 'atari'}_bounded_gaussian_actor_critic",
        observation_shape=list(observation_shape),
        hidden_sizes=list(config.hidden_sizes),
        action_kind=pb.ACTION_KIND_CONTINUOUS,
        action_dim=actions.size,
        action_low=list(actions.low),
        action_high=list(actions.high),
    )
