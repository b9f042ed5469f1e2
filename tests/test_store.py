"""The update rule (server/store.py) against a numpy reference written per tensor, as the paper states it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asyncrl.common.config import RunConfig
from asyncrl.common.tensors import FlatLayout
from asyncrl.server.store import FramesOverflow, ParameterStore
from asyncrl.v1 import parameter_server_pb2 as pb

LAYOUT = FlatLayout([pb.TensorSpec(name="w", shape=[3, 2]), pb.TensorSpec(name="b", shape=[3])])


def reference(theta: list[np.ndarray], square_avg: list[np.ndarray], grads: list[np.ndarray], config: RunConfig,
              global_frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One shared-RMSProp step in float64, tensor by tensor: clip the global norm, then g and theta."""
    norm = np.sqrt(sum(float((g ** 2).sum()) for g in grads))
    scale = min(1.0, config.max_grad_norm / (norm + 1e-6)) if config.max_grad_norm > 0 else 1.0
    lr = config.learning_rate * (max(0.0, 1.0 - global_frames / config.max_frames)
                                 if config.lr_schedule == "linear" else 1.0)
    decay, eps = config.rmsprop_decay, config.rmsprop_eps
    new_theta, new_square = [], []
    for t, s, g in zip(theta, square_avg, grads):
        g = g * scale
        s = decay * s + (1 - decay) * g * g
        new_square.append(s)
        new_theta.append(t - lr * g / np.sqrt(s + eps))
    return new_theta, new_square


@pytest.mark.parametrize("schedule, max_grad_norm", [("linear", 40.0), ("constant", 0.5), ("linear", 0.0)])
def test_updates_match_the_per_tensor_reference(schedule: str, max_grad_norm: float) -> None:
    """Several pushes, with the clip active in the 0.5 case (gradient norms of about 3) and off at 0."""
    config = RunConfig(learning_rate=0.01, lr_schedule=schedule, max_grad_norm=max_grad_norm, max_frames=100)
    generator = torch.Generator().manual_seed(0)
    initial = torch.randn(LAYOUT.total, generator=generator)
    store = ParameterStore(LAYOUT, initial, config, has_target=False)
    theta = [t.double().numpy() for t in LAYOUT.split(initial)]
    square = [np.zeros(shape) for shape in LAYOUT.shapes]
    for step in range(5):
        gradient = torch.randn(LAYOUT.total, generator=generator)
        grads = [g.double().numpy() for g in LAYOUT.split(gradient)]
        theta, square = reference(theta, square, grads, config, global_frames=7 * step)
        snapshot = store.apply(gradient.clone(), frames=7)
        assert (snapshot.version, snapshot.global_frames) == (step + 1, 7 * (step + 1))
        for name, got, want in zip(LAYOUT.names, LAYOUT.split(snapshot.parameters), theta):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(store.square_avg.numpy(), np.concatenate([s.ravel() for s in square]), rtol=1e-5)


def test_snapshots_are_never_modified_by_later_updates() -> None:
    store = ParameterStore(LAYOUT, torch.zeros(LAYOUT.total), RunConfig(), has_target=False)
    first = store.apply(torch.ones(LAYOUT.total), frames=5)
    kept = first.parameters.clone()
    store.apply(torch.ones(LAYOUT.total), frames=5)
    assert torch.equal(first.parameters, kept)
    assert not torch.equal(store.snapshot().parameters, kept)


def test_target_is_copied_when_t_crosses_a_multiple_of_i_target() -> None:
    config = RunConfig(algo="q1", target_update_frames=10)
    store = ParameterStore(LAYOUT, torch.zeros(LAYOUT.total), config, has_target=True)
    versions = []
    for _ in range(6):
        store.apply(torch.ones(LAYOUT.total), frames=4)  # T = 4, 8, 12, 16, 20, 24
        versions.append(store.target().version)
    assert versions == [0, 0, 3, 3, 5, 5]


def test_state_dict_is_by_name_and_a_loaded_store_continues_identically() -> None:
    config = RunConfig(algo="q1", target_update_frames=10)
    generator = torch.Generator().manual_seed(1)
    original = ParameterStore(LAYOUT, torch.randn(LAYOUT.total, generator=generator), config, has_target=True)
    for _ in range(3):
        original.apply(torch.randn(LAYOUT.total, generator=generator), frames=4)
    state = original.state_dict()
    assert set(state["parameters"]) == {"w", "b"} and state["parameters"]["w"].shape == (3, 2)
    restored = ParameterStore(LAYOUT, torch.zeros(LAYOUT.total), config, has_target=True)
    restored.load_state_dict(state)
    gradient = torch.randn(LAYOUT.total, generator=generator)
    a, b = original.apply(gradient.clone(), frames=4), restored.apply(gradient.clone(), frames=4)
    assert (a.version, a.global_frames) == (b.version, b.global_frames) == (4, 16)
    assert torch.equal(a.parameters, b.parameters)
    assert torch.equal(original.square_avg, restored.square_avg)
    assert restored.target().version == original.target().version == 3
    assert torch.equal(restored.target().parameters, original.target().parameters)


def test_parameters_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(ValueError, match="layout of 9 elements"):
        ParameterStore(LAYOUT, torch.zeros(8), RunConfig(), has_target=False)


def test_an_update_that_would_carry_t_past_int64_is_refused_and_changes_nothing() -> None:
    store = ParameterStore(LAYOUT, torch.zeros(LAYOUT.total), RunConfig(), has_target=False)
    state = store.state_dict()
    state["global_frames"] = 2**63 - 10
    store.load_state_dict(state)
    before = store.snapshot()
    with pytest.raises(FramesOverflow, match="past 2"):
        store.apply(torch.ones(LAYOUT.total), 10)
    assert store.snapshot() is before and torch.equal(store.square_avg, torch.zeros(LAYOUT.total))
    assert store.apply(torch.ones(LAYOUT.total), 9).global_frames == 2**63 - 1
