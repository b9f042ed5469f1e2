"""Prometheus metrics: histograms the service observes on each call, and the run's counters and gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from asyncrl.v1 import parameter_server_pb2 as pb

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128)


class _RunCollector(Collector):
    """Reads the run's state when Prometheus scrapes, so the numbers agree with GetStatus by construction."""

    def __init__(self, status: Callable[[], pb.GetStatusResponse], rejections: Callable[[], dict[str, int]],
                 checkpoint_failures: Callable[[], dict[str, int]]) -> None:
        self.status = status
        self.rejections = rejections
        self.checkpoint_failures = checkpoint_failures

    def collect(self) -> Iterator[Any]:
        status = self.status()
        yield CounterMetricFamily("asyncrl_updates_applied", "Pushes applied to the parameters", value=status.updates_applied)
        rejected = CounterMetricFamily("asyncrl_updates_rejected", "Pushes refused, by reason", labels=["reason"])
        for reason, count in sorted(self.rejections().items()):
            rejected.add_metric([reason], count)
        yield rejected
        failures = CounterMetricFamily("asyncrl_checkpoint_failures",
                                       "Failed writes to disk (checkpoints, next worker id, TensorBoard events), by file",
                                       labels=["file"])
        for kind, count in sorted(self.checkpoint_failures().items()):
            failures.add_metric([kind], count)
        yield failures
        yield CounterMetricFamily("asyncrl_global_frames", "The global frame counter T", value=status.global_frames)
        gauges = {
            "asyncrl_version": ("Parameter version", status.version),
            "asyncrl_live_workers": ("Workers heard from within the silence timeout", status.live_workers),
            "asyncrl_frames_per_second": ("Env frames per second over the last seconds", status.frames_per_second),
            "asyncrl_updates_per_second": ("Updates per second over the last seconds", status.updates_per_second),
            "asyncrl_mean_return_100": ("Mean return of the last 100 episodes", status.mean_return_100),
            "asyncrl_episodes_completed": ("Episodes finished", status.episodes_completed),
            "asyncrl_learning_rate": ("Current learning rate", status.learning_rate),
            "asyncrl_training_done": ("1 once training has ended", float(status.training_done)),
        }
        for name, (documentation, value) in gauges.items():
            yield GaugeMetricFamily(name, documentation, value=value)


class ServerMetrics:
    """The server's metrics, in a registry of its own (so several servers can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.push_latency = Histogram(
            "asyncrl_push_latency_seconds", "PushGradients handling time in the server", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pull_latency = Histogram(
            "asyncrl_pull_latency_seconds", "PullWeights handling time in the server", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.staleness = Histogram(
            "asyncrl_push_staleness_versions", "Versions between an applied push's base and the parameters it updated",
            buckets=STALENESS_BUCKETS, registry=self.registry,
        )

    def watch(self, status: Callable[[], pb.GetStatusResponse], rejections: Callable[[], dict[str, int]],
              checkpoint_failures: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_RunCollector(status, rejections, checkpoint_failures))

    def serve(self, host: str, port: int) -> None:
        """Serves /metrics over HTTP on a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
