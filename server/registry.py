"""The workers the server knows: identity, liveness, and the last push of each (for retried pushes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncrl.v1 import parameter_server_pb2 as pb


@dataclass
class WorkerRecord:
    worker_id: int
    name: str
    num_envs: int
    last_seen: float
    last_sequence: int = 0
    last_reply: pb.PushGradientsResponse | None = None
    pushes_applied: int = 0
    epsilons: list[float] = field(default_factory=list)
    evaluation: bool = False  # plays and reports episodes (ReportEvaluation); never pushes
    episodes_reported: int = 0
    # Serialises one worker's pushes, so a retry racing its original is applied once.
    push_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class UnknownWorker(KeyError):
    """No worker with that id registered with this server process."""


class WorkerRegistry:
    def __init__(
        self, silence_timeout: float, first_id: int = 1, record_next_id: Callable[[int], None] | None = None
    ) -> None:
        self.silence_timeout = silence_timeout
        self._workers: dict[int, WorkerRecord] = {}
        # A resumed server starts after the ids it gave out before, so a worker's retried call made
        # under its old id is refused (NOT_FOUND, so it registers again) instead of landing on a newcomer.
        self._next_id = first_id
        # Called with the next id before a registration is answered (the server persists it).
        self._record_next_id = record_next_id
        self._lock = threading.Lock()

    @property
    def next_id(self) -> int:
        """The id the next registration gets (checkpointed, so ids are never reused across a resume)."""
        with self._lock:
            return self._next_id

    def register(self, name: str, num_envs: int, evaluation: bool = False) -> WorkerRecord:
        with self._lock:
            record = WorkerRecord(self._next_id, name, num_envs, time.monotonic(), evaluation=evaluation)
            if self._record_next_id is not None:
                self._record_next_id(self._next_id + 1)
            self._workers[record.worker_id] = record
            self._next_id += 1
            return record

    def seen(self, worker_id: int) -> WorkerRecord:
        """Marks a call from worker_id and returns its record; raises UnknownWorker."""
        record = self._workers.get(worker_id)
        if record is None:
            raise UnknownWorker(worker_id)
        record.last_seen = time.monotonic()
        return record

    def records(self) -> list[WorkerRecord]:
        with self._lock:
            return list(self._workers.values())

    def is_alive(self, record: WorkerRecord, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) - record.last_seen <= self.silence_timeout

    def status(self) -> list[pb.WorkerStatus]:
        now = time.monotonic()
        return [
            pb.WorkerStatus(
                worker_id=r.worker_id,
                name=r.name,
                num_envs=r.num_envs,
                seconds_since_last_seen=now - r.last_seen,
                alive=self.is_alive(r, now),
                pushes_applied=r.pushes_applied,
                epsilons=r.epsilons,
                evaluation=r.evaluation,
                episodes_reported=r.episodes_reported,
            )
            for r in self.records()
        ]
