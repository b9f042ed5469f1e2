"""Translations between the Python configuration and its wire form in asyncrl.v1."""

from __future__ import annotations

from asyncrl.common.algorithms import METHODS
from asyncrl.common.config import RunConfig
from asyncrl.v1 import parameter_server_pb2 as pb

# RunConfig fields a worker needs, sent as-is in the RunConfig message (same names).
WORKER_FIELDS = (
    "env_id", "gamma", "t_max", "entropy_beta", "value_loss_coef", "max_frames", "max_staleness", "async_update",
    "target_update_frames", "epsilon_values", "epsilon_probabilities", "epsilon_anneal_frames",
)


def run_config_message(config: RunConfig, model: pb.ModelSpec, max_message_bytes: int) -> pb.RunConfig:
    """The RunConfig message the server sends at registration: the worker's view of the run."""
    return pb.RunConfig(
        algorithm=METHODS[config.algo].wire,
        model=model,
        max_message_bytes=max_message_bytes,
        **{name: getattr(config, name) for name in WORKER_FIELDS},
    )
