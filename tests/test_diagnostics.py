"""The learning diagnostics a worker pushes, and the server's bound on the metric names it keeps."""

from __future__ import annotations

import math

import torch
from torch import nn

from asyncrl.common.diagnostics import DeadUnits, explained_variance
from asyncrl.server.stats import MAX_METRIC_NAMES, RunStats


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns) == 1.0
    assert explained_variance(torch.full((4,), 2.5), returns) == 0.0
    assert math.isnan(explained_variance(returns, torch.ones(4)))  # constant targets: undefined


def test_dead_units_counts_units_silent_on_every_input_and_only_while_measuring():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Conv2d(1, 2, 1), nn.ReLU())
    linear, conv = model[0], model[2]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([1.0, -1.0, -1.0, 1.0]))  # units 1 and 2 never fire
        conv.weight.fill_(1.0)
        conv.bias.copy_(torch.tensor([0.0, -100.0]))  # channel 1 never fires
    dead = DeadUnits(model)
    model[0:2](torch.randn(8, 2))
    assert dead.metrics() == {}  # outside measuring()
    with dead.measuring():
        model[0:2](torch.randn(8, 2))
        model[2:](torch.rand(3, 1, 5, 5))
    assert dead.metrics() == {"diagnostics/dead_relu/1": 0.5, "diagnostics/dead_relu/3": 0.5}


def test_the_server_keeps_a_bounded_number_of_metric_names():
    stats = RunStats()
    for index in range(MAX_METRIC_NAMES + 10):
        stats.record_metrics({f"losses/m{index}": float(index)})
    stats.record_metrics({"losses/m0": 2.0})
    recent = stats.recent_metrics()
    assert len(recent) == MAX_METRIC_NAMES and recent["losses/m0"] == 1.0  # the mean of 0 and 2
