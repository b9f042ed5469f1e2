"""Run statistics for GetStatus and the progress display: episode returns, counters and rates."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque


class RateMeter:
    """A per-second rate of a growing counter, over a sliding window of recent samples."""

    def __init__(self, window_seconds: float = 5.0) -> None:
        self.window_seconds = window_seconds
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, count: int, now: float) -> float:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_seconds:
            self._samples.popleft()
        start_time, start_count = self._samples[0]
        return (count - start_count) / (now - start_time) if now > start_time else 0.0


MAX_METRIC_NAMES = 64  # a bound on what pushes can make the server remember, whatever they send
METRIC_WINDOW = 100


class RunStats:
    def __init__(self, recent_returns: list[float] | None = None, episodes_completed: int = 0,
                 eval_window: int = 10) -> None:
        self._metrics: dict[str, deque[float]] = {}
        self.recent_returns: deque[float] = deque(recent_returns or [], maxlen=100)
        self.episodes_completed = episodes_completed
        # The evaluation workers' episodes, apart from training's: they score the policy as it is now,
        # without exploration, so only the latest few count (not checkpointed: they refill after a resume).
        self.eval_returns: deque[float] = deque(maxlen=eval_window)
        self.eval_episodes_completed = 0
        self.rejections: Counter[str] = Counter()
        # Failed writes to disk, by file: the checkpoint directory's ("checkpoint", "next_worker_id") and the
        # TensorBoard event file ("tensorboard").
        self.checkpoint_failures: Counter[str] = Counter()
        self.frame_rate = RateMeter()
        self.update_rate = RateMeter()
        self._lock = threading.Lock()

    def record_episodes(self, returns: list[float]) -> None:
        with self._lock:
            self.recent_returns.extend(returns)
            self.episodes_completed += len(returns)

    def record_eval_episodes(self, returns: list[float]) -> None:
        with self._lock:
            self.eval_returns.extend(returns)
            self.eval_episodes_completed += len(returns)

    def eval_mean_return(self) -> float:
        """The mean of the latest eval_window evaluation returns (0 before any)."""
        with self._lock:
            return sum(self.eval_returns) / len(self.eval_returns) if self.eval_returns else 0.0

    def record_metrics(self, metrics: dict[str, float]) -> None:
        """One push's metrics; names beyond the first MAX_METRIC_NAMES ever seen are not kept."""
        with self._lock:
            for name, value in metrics.items():
                window = self._metrics.get(name)
                if window is None and len(self._metrics) < MAX_METRIC_NAMES:
                    window = self._metrics[name] = deque(maxlen=METRIC_WINDOW)
                if window is not None:
                    window.append(value)

    def recent_metrics(self) -> dict[str, float]:
        """Each metric's mean over the last METRIC_WINDOW pushes that reported it."""
        with self._lock:
            return {name: sum(window) / len(window) for name, window in self._metrics.items()}

    def record_rejection(self, reason: str) -> None:
        with self._lock:
            self.rejections[reason] += 1

    def record_checkpoint_failure(self, kind: str) -> None:
        with self._lock:
            self.checkpoint_failures[kind] += 1

    @property
    def updates_rejected(self) -> int:
        return sum(self.rejections.values())

    def mean_return(self) -> float:
        with self._lock:
            return sum(self.recent_returns) / len(self.recent_returns) if self.recent_returns else 0.0

    def rates(self, global_frames: int, updates: int) -> tuple[float, float]:
        """(frames/s, updates/s) over the last few seconds, from T and the version (one per applied update)."""
        with self._lock:
            now = time.monotonic()
            return self.frame_rate.rate(global_frames, now), self.update_rate.rate(updates, now)
