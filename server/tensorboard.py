"""TensorBoard event files from what workers report, written by the serve loop so that pushes never wait on disk."""

from __future__ import annotations

import threading
from collections import defaultdict

from tensorboardX import SummaryWriter

from asyncrl.v1 import parameter_server_pb2 as pb


class TensorBoardLog:
    """Collects reports from pushes (any thread) and writes them on flush (the serve loop), with step = T.

    Tags are stable: charts/episodic_return, charts/episodic_length, charts/SPS,
    charts/updates_per_second, charts/learning_rate, charts/mean_return_100,
    charts/epsilon_min|mean|max, charts/eval_return (each evaluation episode's return, at the T
    it was reported), the workers' own losses/... and diagnostics/... names, and the server's
    diagnostics/update_ratio/<tensor>.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.writer = SummaryWriter(directory)
        self._lock = threading.Lock()
        self._episodes: list[tuple[int, float, int]] = []
        self._eval_returns: list[tuple[int, float]] = []
        self._metrics: dict[str, list[float]] = defaultdict(list)

    def record_push(self, global_frames: int, request: pb.PushGradientsRequest) -> None:
        with self._lock:
            self._episodes += [(global_frames, e.episode_return, e.length) for e in request.episodes]
            for name, value in request.metrics.items():
                self._metrics[name].append(value)

    def record_evaluation(self, global_frames: int, returns: list[float]) -> None:
        with self._lock:
            self._eval_returns += [(global_frames, r) for r in returns]

    def flush(self, status: pb.GetStatusResponse) -> None:
        with self._lock:
            episodes, self._episodes = self._episodes, []
            eval_returns, self._eval_returns = self._eval_returns, []
            metrics, self._metrics = self._metrics, defaultdict(list)
        step = status.global_frames
        for frames, episode_return, length in episodes:
            self.writer.add_scalar("charts/episodic_return", episode_return, frames)
            self.writer.add_scalar("charts/episodic_length", length, frames)
        for frames, episode_return in eval_returns:
            self.writer.add_scalar("charts/eval_return", episode_return, frames)
        for name, values in metrics.items():  # averaged over the pushes since the last flush
            self.writer.add_scalar(name, sum(values) / len(values), step)
        for name, value in status.metrics.items():
            if name.startswith("diagnostics/update_ratio/"):  # the server's own; the rest came with pushes
                self.writer.add_scalar(name, value, step)
        self.writer.add_scalar("charts/SPS", status.frames_per_second, step)
        self.writer.add_scalar("charts/updates_per_second", status.updates_per_second, step)
        self.writer.add_scalar("charts/learning_rate", status.learning_rate, step)
        self.writer.add_scalar("charts/mean_return_100", status.mean_return_100, step)
        epsilons = [e for worker in status.workers if worker.alive for e in worker.epsilons]
        if epsilons:
            self.writer.add_scalar("charts/epsilon_min", min(epsilons), step)
            self.writer.add_scalar("charts/epsilon_mean", sum(epsilons) / len(epsilons), step)
            self.writer.add_scalar("charts/epsilon_max", max(epsilons), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
