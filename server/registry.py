"""The workers the server knows: identity and its secret, liveness, and the last push of each (for retried pushes)."""

from __future__ import annotations

import heapq
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncrl.common.limits import MAX_NUM_ENVS
from asyncrl.server.shards import derived_secret
from asyncrl.v1 import parameter_server_pb2 as pb

SECRET_BYTES = 32
# GetStatus lists at most this many workers (the most recently seen), with totals beside them.
MAX_LISTED_WORKERS = 64


@dataclass
class WorkerRecord:
    worker_id: int
    name: str
    num_envs: int
    last_seen: float
    # Proves a call comes from this worker: ids are sequential, so anyone could name one.
    secret: bytes = field(default=b"", repr=False)
    last_sequence: int = 0  # of its last applied push; a retry of it is answered, not applied again
    pushes_applied: int = 0
    epsilons: list[float] = field(default_factory=list)
    evaluation: bool = False  # plays and reports episodes (ReportEvaluation); never pushes
    episodes_reported: int = 0


class UnknownWorker(KeyError):
    """No worker with that id registered with this server process."""


class WrongSecret(PermissionError):
    """A call named a known worker id without that worker's secret."""


class RegistryFull(RuntimeError):
    """max_workers workers are registered and none has been silent past the silence timeout."""


class WorkerRegistry:
    def __init__(
        self, silence_timeout: float, first_id: int = 1, record_next_id: Callable[[int], bool] | None = None,
        max_workers: int = 0, shard_key: bytes | None = None,
    ) -> None:
        self.silence_timeout = silence_timeout
        self.max_workers = max_workers  # 0: no limit
        # With shards, secrets are derived from a key every shard has, so that each can check them.
        self._shard_key = shard_key
        self._workers: dict[int, WorkerRecord] = {}
        # A resumed server starts after the ids it gave out before, so a worker's retried call made
        # under its old id is refused (NOT_FOUND, so it registers again) instead of landing on a newcomer.
        self._next_id = first_id
        # Called with the next id before a registration is answered (the server persists it, and says whether the
        # write succeeded). It runs outside _lock, which every pull and push takes, under _persist_lock: a
        # registration waits for the disk, no pull or push does, and registrations arriving during a write are
        # covered by the next one (it records the highest id given out by then).
        self._record_next_id = record_next_id
        self._persisted = first_id  # the next id as last recorded (or as the server started from)
        self._lock = threading.Lock()
        self._persist_lock = threading.Lock()

    @property
    def next_id(self) -> int:
        """The id the next registration gets (checkpointed, so ids are never reused across a resume)."""
        with self._lock:
            return self._next_id

    def register(self, name: str, num_envs: int, evaluation: bool = False) -> WorkerRecord:
        """A new worker with a fresh secret; under max_workers, silent workers give up their slots first.

        Returns once the next id after it is recorded (record_next_id), so a resumed server does not give
        the id out again (unless that write failed, on a full disk, and the server was killed before its
        next checkpoint). Raises RegistryFull when every slot is held by a worker that called within the
        silence timeout.
        """
        record = self._add(name, num_envs, evaluation)
        self._persist(record.worker_id + 1)
        return record

    def _persist(self, covering: int) -> None:
        """Records a next id of at least covering, unless a write since did; outside _lock (see __init__)."""
        if self._record_next_id is None:
            return
        with self._persist_lock:
            if self._persisted >= covering:
                return  # a registration's write while this one waited covered it
            next_id = self.next_id  # every id given out so far, this one included
            if self._record_next_id(next_id):  # False: the write failed (logged and counted)
                self._persisted = next_id

    def _add(self, name: str, num_envs: int, evaluation: bool) -> WorkerRecord:
        with self._lock:
            now = time.monotonic()
            if self.max_workers and len(self._workers) >= self.max_workers:
                self._workers = {i: r for i, r in self._workers.items() if self.is_alive(r, now)}
                if len(self._workers) >= self.max_workers:
                    raise RegistryFull(f"{len(self._workers)} workers registered, the server's maximum "
                                       f"(--max-workers); a slot frees when one is silent for "
                                       f"{self.silence_timeout:g}s")
            secret = (derived_secret(self._shard_key, self._next_id) if self._shard_key
                      else secrets.token_bytes(SECRET_BYTES))
            record = WorkerRecord(self._next_id, name, num_envs, now, secret, evaluation=evaluation)
            self._workers[record.worker_id] = record
            self._next_id += 1
            return record

    def seen(self, worker_id: int, secret: bytes, adopt: bool = False) -> WorkerRecord:
        """Marks a call from worker_id and returns its record; raises UnknownWorker, or WrongSecret (and marks
        nothing, so an impostor cannot keep a dead worker's slot) when secret is not the worker's.

        adopt: a shard other than 0 takes a worker it has not seen, registered with shard 0, if the
        secret is the one derived for its id (its first call there is a pull).
        """
        with self._lock:
            record = self._workers.get(worker_id)
            if record is None and adopt and self._shard_key is not None:
                record = self._adopt(worker_id, secret)
        if record is None:
            raise UnknownWorker(worker_id)
        if not hmac.compare_digest(record.secret, secret):
            raise WrongSecret(worker_id)
        record.last_seen = time.monotonic()
        return record

    def _adopt(self, worker_id: int, secret: bytes) -> WorkerRecord:
        """A record for a worker shard 0 registered; its env copies are unknown here, so its pushes are bounded by
        the most any worker may have. Records of workers silent past the timeout go first: memory stays bounded."""
        assert self._shard_key is not None
        if not hmac.compare_digest(derived_secret(self._shard_key, worker_id), secret):
            raise WrongSecret(worker_id)
        now = time.monotonic()
        self._workers = {i: r for i, r in self._workers.items() if self.is_alive(r, now)}
        record = self._workers[worker_id] = WorkerRecord(worker_id, "", MAX_NUM_ENVS, now, secret)
        return record

    def records(self) -> list[WorkerRecord]:
        with self._lock:
            return list(self._workers.values())

    def is_alive(self, record: WorkerRecord, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) - record.last_seen <= self.silence_timeout

    def status(self) -> tuple[list[pb.WorkerStatus], int, int]:
        """The MAX_LISTED_WORKERS most recently seen workers' status, the number registered, the number alive."""
        now = time.monotonic()
        records = self.records()
        alive = sum(self.is_alive(r, now) for r in records)
        listed = heapq.nlargest(MAX_LISTED_WORKERS, records, key=lambda r: r.last_seen)
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
            for r in listed
        ], len(records), alive
