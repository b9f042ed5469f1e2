"""TensorBoard event files from what workers report, written by the serve loop so that pushes never wait on disk."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import BinaryIO

from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import masked_crc32c

from asyncrl.v1 import parameter_server_pb2 as pb


class TensorBoardLog:
    """Collects reports from pushes (any thread) and writes them on flush (the serve loop), with step = T.

    Tags are stable: charts/episodic_return, charts/episodic_length, charts/SPS,
    charts/updates_per_second, charts/learning_rate, charts/mean_return_100,
    charts/epsilon_min|mean|max, charts/eval_return (each evaluation episode's return, at the T
    it was reported), the workers' own losses/... and diagnostics/... names, and the server's
    diagnostics/update_ratio/<tensor>.

    The event file is written here, synchronously, not by tensorboardX's SummaryWriter: its writer
    thread dies on the first failed write (a full disk), after which its bounded queue blocks the
    serve loop for good. Each flush appends its events as one block; a failed one (OSError, raised
    to the caller) is cut off again, so the file holds only whole records, and its events are
    dropped: memory stays bounded, and the next flush tries again.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._file: BinaryIO | None = None
        self._size = 0  # bytes of whole records in the file
        self._lock = threading.Lock()
        self._episodes: list[tuple[int, float, int]] = []
        self._eval_returns: list[tuple[int, float]] = []
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._open()  # a directory that cannot be written stops the server at start, not at the first flush

    def record_push(self, global_frames: int, request: pb.PushGradientsRequest) -> None:
        with self._lock:
            self._episodes += [(global_frames, e.episode_return, e.length) for e in request.episodes]
            for name, value in request.metrics.items():
                self._metrics[name].append(value)

    def record_evaluation(self, global_frames: int, returns: list[float]) -> None:
        with self._lock:
            self._eval_returns += [(global_frames, r) for r in returns]

    def flush(self, status: pb.GetStatusResponse) -> None:
        """Writes what was reported since the last flush and the run's rates; raises OSError when the write fails."""
        with self._lock:
            episodes, self._episodes = self._episodes, []
            eval_returns, self._eval_returns = self._eval_returns, []
            metrics, self._metrics = self._metrics, defaultdict(list)
        scalars: list[tuple[str, float, int]] = []
        step = status.global_frames
        for frames, episode_return, length in episodes:
            scalars += [("charts/episodic_return", episode_return, frames), ("charts/episodic_length", length, frames)]
        scalars += [("charts/eval_return", episode_return, frames) for frames, episode_return in eval_returns]
        # The workers' metrics, averaged over the pushes since the last flush.
        scalars += [(name, sum(values) / len(values), step) for name, values in metrics.items()]
        scalars += [(name, value, step) for name, value in status.metrics.items()
                    if name.startswith("diagnostics/update_ratio/")]  # the server's own; the rest came with pushes
        scalars += [("charts/SPS", status.frames_per_second, step),
                    ("charts/updates_per_second", status.updates_per_second, step),
                    ("charts/learning_rate", status.learning_rate, step),
                    ("charts/mean_return_100", status.mean_return_100, step)]
        epsilons = [e for worker in status.workers if worker.alive for e in worker.epsilons]
        if epsilons:
            scalars += [("charts/epsilon_min", min(epsilons), step),
                        ("charts/epsilon_mean", sum(epsilons) / len(epsilons), step),
                        ("charts/epsilon_max", max(epsilons), step)]
        now = time.time()
        self._append(b"".join(_record(event_pb2.Event(
            wall_time=now, step=step,
            summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])))
            for tag, value, step in scalars))

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def _open(self) -> None:
        """Opens a new event file, unbuffered (nothing held back), and writes its version record."""
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._file = open(Path(self.directory) / name, "ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size
        if self._size == 0:  # every event file starts with its version
            self._append(_record(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")))

    def _append(self, block: bytes) -> None:
        """Appends block to the event file (opening one first, if none is open), fsynced; on OSError, cuts it off."""
        if self._file is None:
            self._open()
        assert self._file is not None
        try:
            view = memoryview(block)
            while view:
                view = view[self._file.write(view):]
            os.fsync(self._file.fileno())
        except OSError:
            try:
                os.ftruncate(self._file.fileno(), self._size)  # frees space, so it works on a full disk too
            except OSError:
                self.close()  # the next flush starts a new file
            raise
        self._size += len(block)


def _record(event: event_pb2.Event) -> bytes:
    """One event in TFRecord framing: length, its masked CRC-32C, the event, its masked CRC-32C."""
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))
