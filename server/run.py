"""The one owner of a run's state on the server: parameters, workers, statistics and the end of training.

Every change to the run happens here, under one lock: a push's checks that need the run's
state (its sequence number against the worker's last, its base version against the
current one, its frames against the worker's env copies), the update itself, the
bookkeeping that follows it and the end-of-training rule are one step, so no other push,
report or checkpoint sees half of it. Reads (pulls, the status) take consistent
snapshots without waiting for updates. The gRPC servicer (server/service.py) only
decodes, checks what needs no state, encodes and maps refusals to status codes; the
in-process benchmark drives the same object without the wire.

A shard of a sharded server (docs/sharding.md) is a Run over its slice: shard 0 also
registers workers, keeps the episodes and ends the run; the others take workers shard 0
registered (checking their derived secrets) and apply their slice of each push.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import torch

from asyncrl.common.config import RunConfig
from asyncrl.common.seeding import derive_seed
from asyncrl.common.tensors import FlatLayout
from asyncrl.server import validation
from asyncrl.server.registry import RegistryFull, UnknownWorker, WorkerRecord, WorkerRegistry, WrongSecret
from asyncrl.server.restore import RunParts
from asyncrl.server.shards import ShardMap
from asyncrl.server.stats import RunStats
from asyncrl.server.store import FramesOverflow, ParameterStore, Snapshot
from asyncrl.server.validation import INVALID, Refusal
from asyncrl.v1 import parameter_server_pb2 as pb

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
UPDATE_RATIO_PREFIX = "diagnostics/update_ratio/"


@dataclass(frozen=True)
class Weights:
    """What a pull or a push answers with: a snapshot of the parameters, the target network's, and the run's state."""

    snapshot: Snapshot
    target: Snapshot | None
    training_done: bool
    staleness: int | None = None  # of an applied push: versions between its base and the parameters it updated

    @property
    def target_version(self) -> int:
        return self.target.version if self.target is not None else 0


class Run:
    """A run being served: its store, registry and statistics, and the rule that ends it."""

    def __init__(
        self,
        parts: RunParts,
        config_message: pb.RunConfig,
        registry: WorkerRegistry,
        on_push: Callable[[int, pb.PushGradientsRequest], None] | None = None,
        on_evaluation: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self.config: RunConfig = parts.config
        self.config_message = config_message
        self.store: ParameterStore = parts.store
        self.stats: RunStats = parts.stats
        self.shards: ShardMap = parts.shards
        self.registry = registry
        self.on_push = on_push  # called with (T, request) after each applied push, e.g. for TensorBoard
        self.on_evaluation = on_evaluation  # called with (T, returns) after each accepted evaluation report
        self.started = time.monotonic()
        self._training_done = False
        self._lock = threading.Lock()

    @property
    def training_done(self) -> bool:
        return self._training_done

    # --- workers --------------------------------------------------------------------------------

    def register(self, name: str, num_envs: int, evaluation: bool) -> tuple[WorkerRecord, int]:
        """A new worker and the seed it derives its own from; RESOURCE_EXHAUSTED past --max-workers."""
        self._require_coordinator("RegisterWorker")
        try:
            record = self.registry.register(name, num_envs, evaluation)
        except RegistryFull as full:
            raise Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "registry_full", str(full)) from None
        return record, derive_seed(self.config.seed, record.worker_id)

    def worker(self, worker_id: int, secret: bytes, first_contact: bool = False) -> WorkerRecord:
        """The calling worker's record, marked alive; NOT_FOUND or PERMISSION_DENIED (marking nothing) otherwise.

        first_contact (a pull): a shard other than 0 takes a worker shard 0 registered. A push from
        a worker it does not know (it restarted) is NOT_FOUND, so the worker registers and pulls again.
        """
        try:
            return self.registry.seen(worker_id, secret, adopt=first_contact and not self.shards.is_coordinator)
        except WrongSecret:
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED, "wrong_secret",
                          f"worker_secret is not worker {worker_id}'s (use the one its RegisterWorkerResponse "
                          "gave)") from None
        except UnknownWorker:
            raise Refusal(grpc.StatusCode.NOT_FOUND, "unknown_worker",
                          f"unknown worker id {worker_id}: call RegisterWorker (the server may have restarted)") from None

    def layout(self, sliced: bool) -> FlatLayout:
        """How a request's tensors are laid out: a shard of a sharded server takes only its slice, as one tensor;
        a server of one process takes the model's tensors, or (sliced) the whole vector as one."""
        if self.shards.sharded and not sliced:
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, "unsliced",
                          f"this server is {self.shards.describe()} of the flat parameter vector: pull and push "
                          "that slice (sliced, as RegisterWorkerResponse.shards says), not the whole model")
        return self.shards.slice_layout() if sliced and not self.shards.sharded else self.store.layout

    def _require_coordinator(self, what: str) -> None:
        if not self.shards.is_coordinator:
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, "not_shard_0",
                          f"this server is {self.shards.describe()}: {what} goes to shard 0 "
                          f"({self.shards.addresses[0] if self.shards.addresses else 'the address workers register with'})")

    # --- the RPCs' work -------------------------------------------------------------------------

    def pull(self) -> Weights:
        return Weights(self.store.snapshot(), self.store.target(), self._training_done)

    def push(self, record: WorkerRecord, request: pb.PushGradientsRequest, gradients: torch.Tensor) -> Weights:
        """Applies one push of record's worker, or answers its retry; raises Refusal, having changed nothing.

        gradients is the request's, decoded and checked finite by the caller (outside the lock:
        it is the costly part of a push that needs no state). A shard of a sharded server clips
        it by the whole gradient's norm, which the worker states.
        """
        norm = validation.check_gradient_norm(request.gradient_norm, gradients) if self.shards.sharded else None
        with self._lock:
            if request.sequence_number == record.last_sequence != 0:  # a retry of the push applied last
                return self.pull()
            validation.check_push(request, record, self.config_message, self.store.version)
            if self._training_done:
                return self.pull()
            staleness = self.store.version - request.base_version
            try:
                snapshot = self.store.apply(gradients, request.frames, norm)
            except FramesOverflow as error:
                raise Refusal(INVALID, "bad_frames", str(error)) from None
            record.last_sequence = request.sequence_number
            record.pushes_applied += 1
            record.epsilons = list(request.epsilons)
            self.stats.record_episodes([e.episode_return for e in request.episodes])
            self.stats.record_metrics(dict(request.metrics))
            if self.on_push is not None:
                self.on_push(snapshot.global_frames, request)
            self._check_training_done()
            return Weights(snapshot, self.store.target(), self._training_done, staleness)

    def report_evaluation(self, request: pb.ReportEvaluationRequest) -> bool:
        """Takes an evaluation worker's episodes (unless training is over); returns whether it is over."""
        self._require_coordinator("ReportEvaluation")
        record = self.worker(request.worker_id, request.worker_secret)
        with self._lock:
            validation.check_evaluation_report(request, record, self.store.version)
            if not self._training_done:
                returns = [e.episode_return for e in request.episodes]
                self.stats.record_eval_episodes(returns)
                record.episodes_reported += len(returns)
                if self.on_evaluation is not None:
                    self.on_evaluation(self.store.global_frames, returns)
                self._check_training_done()
            return self._training_done

    def _check_training_done(self) -> None:
        """The run ends when T reaches the budget, or when the mean return that --target-on names reaches the target
        over a full window: the last 100 training episodes, or the last eval_window evaluation episodes.

        Only shard 0 ends the run (its workers stop when it says so); the other shards serve until stopped.
        """
        if not self.shards.is_coordinator:
            return
        target = self.config.target_return
        if self.config.target_on == "eval":
            which, window, mean = "evaluation", self.stats.eval_returns, self.stats.eval_mean_return
        else:
            which, window, mean = "training", self.stats.recent_returns, self.stats.mean_return
        reached_target = target is not None and len(window) == window.maxlen and mean() >= target
        global_frames = self.store.global_frames
        if (global_frames >= self.config.max_frames or reached_target) and not self._training_done:
            log.info("training done at T=%d: %s", global_frames,
                     f"{which} mean return {mean():.1f} >= {target}" if reached_target else "frame budget spent")
            self._training_done = True

    # --- what the run reports and keeps ---------------------------------------------------------

    def status(self) -> pb.GetStatusResponse:
        snapshot = self.store.snapshot()
        frames_per_second, updates_per_second = self.stats.rates(snapshot.global_frames, snapshot.version)
        workers, registered, alive = self.registry.status()
        return pb.GetStatusResponse(
            global_frames=snapshot.global_frames,
            version=snapshot.version,
            updates_applied=snapshot.version,  # every applied update raises the version by one
            updates_rejected=self.stats.updates_rejected,
            live_workers=alive,
            workers=workers,
            registered_workers=registered,
            max_workers=self.registry.max_workers,
            mean_return_100=self.stats.mean_return(),
            episodes_completed=self.stats.episodes_completed,
            frames_per_second=frames_per_second,
            updates_per_second=updates_per_second,
            training_done=self._training_done,
            learning_rate=self.store.learning_rate(),
            uptime_seconds=time.monotonic() - self.started,
            checkpoint_failures=sum(self.stats.checkpoint_failures.values()),
            eval_mean_return=self.stats.eval_mean_return(),
            eval_episodes_completed=self.stats.eval_episodes_completed,
            eval_window=self.config.eval_window,
            shard_index=self.shards.index,
            shards=self.shards.count,
            metrics={**self.stats.recent_metrics(),
                     **{UPDATE_RATIO_PREFIX + name: ratio for name, ratio in self.store.update_ratios.items()}},
        )

    def state_dict(self) -> dict:
        """Everything a resumed server needs, at one instant, as plain tensors and Python values (weights_only)."""
        with self._lock:
            return {
                "format": CHECKPOINT_FORMAT,
                "config": dataclasses.asdict(self.config),
                "store": self.store.state_dict(),
                "recent_returns": list(self.stats.recent_returns),
                "episodes_completed": self.stats.episodes_completed,
                "next_worker_id": self.registry.next_id,
                "training_done": self._training_done,
                "shard": {"index": self.shards.index, "count": self.shards.count},
            }
