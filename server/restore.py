"""A run rebuilt from a checkpoint's state, or CheckpointError saying why that state cannot be resumed.

A checkpoint that verified can still hold a run that does not fit (a config this version
of asyncrl refuses, tensors of another model) or that must not be resumed (NaN weights):
those are skipped like damaged files, so --resume falls back to an older checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from asyncrl.common.algorithms import METHODS
from asyncrl.common.checkpoint import CheckpointError
from asyncrl.common.config import RunConfig
from asyncrl.common.limits import INT64_MAX
from asyncrl.common.models import build_model
from asyncrl.common.tensors import FlatLayout
from asyncrl.common.wire import model_spec
from asyncrl.server.shards import ShardMap
from asyncrl.server.stats import RunStats
from asyncrl.server.store import ParameterStore
from asyncrl.v1 import parameter_server_pb2 as pb


@dataclass
class RunParts:
    """What a run is built from (server/run.py): its config, model spec, parameter store and statistics, and the
    next worker id."""

    config: RunConfig
    spec: pb.ModelSpec
    store: ParameterStore
    stats: RunStats
    shards: ShardMap
    next_worker_id: int = 1


# The shard map of a model of so many parameters (server/app.py makes it from --shards and --shard-index).
ShardMapOf = Callable[[int], ShardMap]


def _one_process(total: int) -> ShardMap:
    return ShardMap(0, 1, total)


def new_run(config: RunConfig, shard_map: ShardMapOf = _one_process) -> RunParts:
    """A fresh run: the initial weights come from the run seed; a shard keeps its slice of them."""
    spec = model_spec(config)
    torch.manual_seed(config.seed)  # the initial weights; everything after comes from pushes
    layout = FlatLayout(spec.layout)
    parameters = layout.flatten(build_model(spec).parameters())
    shards = shard_map(layout.total)
    if shards.sharded:
        layout, parameters = shards.slice_layout(), parameters[shards.offset:shards.offset + shards.length].clone()
    store = ParameterStore(layout, parameters, config, has_target=METHODS[config.algo].value_based)
    return RunParts(config, spec, store, RunStats(eval_window=config.eval_window), shards)


def restored_run(state: dict[str, Any], shard_map: ShardMapOf = _one_process) -> RunParts:
    """The checkpointed run in state; raises CheckpointError if it is malformed, holds non-finite tensors or is
    another shard's."""
    try:
        run = new_run(RunConfig(**state["config"]), shard_map)
        saved = state.get("shard", {"index": 0, "count": 1})
        if (saved["index"], saved["count"]) != (run.shards.index, run.shards.count):
            raise CheckpointError(f"holds shard {saved['index']} of {saved['count']}; this server is "
                                  f"{run.shards.describe()}")
        store_state = state["store"]
        _check_store_state(store_state, run.store.layout)
        run.store.load_state_dict(store_state)
        run.stats = _restored_stats(state, run.config.eval_window)
        run.next_worker_id = _counter(state.get("next_worker_id", 1), "next_worker_id")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # a state of the wrong shape, or a bad config
        raise CheckpointError(f"does not hold a run this server can resume: {type(error).__name__}: {error}") from error
    return run


def _check_store_state(state: dict[str, Any], layout: FlatLayout) -> None:
    _counter(state["version"], "version")
    _counter(state["global_frames"], "global_frames")
    _check_tensors(state["parameters"], layout, "parameters")
    _check_tensors(state["square_avg"], layout, "square_avg")
    if not all(bool((t >= 0).all()) for t in state["square_avg"].values()):
        raise CheckpointError("square_avg holds negative values")
    if state["target"] is not None:
        _counter(state["target"]["version"], "target version")
        _check_tensors(state["target"]["parameters"], layout, "target parameters")


def _check_tensors(named: dict[str, torch.Tensor], layout: FlatLayout, what: str) -> None:
    """Exactly the layout's tensors, by name, each float32 of its shape and finite."""
    if list(named) != list(layout.names):
        raise CheckpointError(f"{what}: tensors {list(named)[:8]} where the model has {list(layout.names)[:8]}")
    for (name, tensor), shape in zip(named.items(), layout.shapes):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32 or tuple(tensor.shape) != shape:
            raise CheckpointError(f"{what}: {name!r} is not a float32 tensor of shape {list(shape)}")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{what}: {name!r} holds NaN or Inf")


def _counter(value: Any, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise CheckpointError(f"{what} {value!r} is not a count in 0..2**63 - 1")
    return value


def _restored_stats(state: dict[str, Any], eval_window: int) -> RunStats:
    returns = [float(r) for r in state["recent_returns"]]
    if not all(math.isfinite(r) for r in returns):
        raise CheckpointError("recent_returns holds NaN or Inf")
    return RunStats(returns, _counter(state["episodes_completed"], "episodes_completed"), eval_window)
