"""The ParameterServerService RPCs: validate each request, then hand it to the store, registry and stats."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import torch

from asyncrl.common.config import RunConfig
from asyncrl.common.seeding import derive_seed
from asyncrl.common.algorithms import METHODS
from asyncrl.server import validation
from asyncrl.server.metrics import ServerMetrics
from asyncrl.server.registry import RegistryFull, UnknownWorker, WorkerRecord, WorkerRegistry, WrongSecret
from asyncrl.server.stats import RunStats
from asyncrl.server.store import FramesOverflow, ParameterStore, Snapshot
from asyncrl.server.validation import INVALID, Refusal
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

CURRENT_VERSION_KEY = "asyncrl-current-version"
UPDATE_RATIO_PREFIX = "diagnostics/update_ratio/"

Handler = TypeVar("Handler", bound=Callable[..., Any])


def internal_on_unexpected(handler: Handler) -> Handler:
    """An RPC whose unexpected exception becomes INTERNAL, with a message and a logged traceback.

    gRPC would answer UNKNOWN with no detail; INTERNAL tells the caller it is the server's
    fault. Refusals (context.abort, which sets the code) and in-process calls without a
    context pass through unchanged.
    """

    @functools.wraps(handler)
    def answer(self: Any, request: Any, context: grpc.ServicerContext | None) -> Any:
        try:
            return handler(self, request, context)
        except Exception as error:
            if context is None or context.code() is not None:
                raise
            log.exception("%s failed", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{handler.__name__}: internal error: {type(error).__name__}: "
                          f"{str(error)[:500]}")
            raise  # unreachable: abort raises

    return answer  # type: ignore[return-value]


class ParameterServerServicer(pb_grpc.ParameterServerServiceServicer):
    def __init__(
        self,
        config: RunConfig,
        config_message: pb.RunConfig,
        store: ParameterStore,
        registry: WorkerRegistry,
        stats: RunStats,
        heartbeat_interval: float,
        metrics: ServerMetrics,
        on_push: Callable[[int, pb.PushGradientsRequest], None] | None = None,
        on_evaluation: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self.config = config
        self.config_message = config_message
        self.store = store
        self.registry = registry
        self.stats = stats
        self.heartbeat_interval = heartbeat_interval
        self.metrics = metrics
        self.on_push = on_push  # called with (T, request) after each applied push, e.g. for TensorBoard
        self.on_evaluation = on_evaluation  # called with (T, returns) after each accepted evaluation report
        self.training_done = threading.Event()
        self.started = time.monotonic()
        self._encoded: dict[tuple[int, int], list[pb.Tensor]] = {}
        self._encode_lock = threading.Lock()

    # --- RPCs -----------------------------------------------------------------------------

    @internal_on_unexpected
    def RegisterWorker(self, request: pb.RegisterWorkerRequest, context: grpc.ServicerContext):
        try:
            validation.check_registration(request, METHODS[self.config.algo].wire)
        except Refusal as refusal:
            log.warning("refused registration (%s): %s", refusal.reason, refusal.message)
            context.abort(refusal.code, refusal.message)
        try:
            record = self.registry.register(request.name, request.num_envs, request.evaluation)
        except RegistryFull as full:
            log.warning("refused registration of %r: %s", request.name, full)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(full))
        log.info("registered %s worker %d (%r, %d env copies)", "evaluation" if record.evaluation else "training",
                 record.worker_id, request.name, request.num_envs)
        return pb.RegisterWorkerResponse(
            worker_id=record.worker_id,
            seed=derive_seed(self.config.seed, record.worker_id),
            config=self.config_message,
            heartbeat_interval_seconds=self.heartbeat_interval,
            worker_secret=record.secret,
        )

    @internal_on_unexpected
    def GetConfig(self, request: pb.GetConfigRequest, context: grpc.ServicerContext):
        return pb.GetConfigResponse(config=self.config_message)

    @internal_on_unexpected
    def PullWeights(self, request: pb.PullWeightsRequest, context: grpc.ServicerContext):
        with self.metrics.pull_latency.time():
            return self._pull_weights(request, context)

    def _pull_weights(self, request: pb.PullWeightsRequest, context: grpc.ServicerContext) -> pb.PullWeightsResponse:
        try:
            validation.check_pull(request)
        except Refusal as refusal:
            context.abort(refusal.code, refusal.message)
        self._known_worker(request.worker_id, request.worker_secret, context)
        dtype = request.dtype or pb.DTYPE_FLOAT32
        snapshot, target = self.store.snapshot(), self.store.target()
        reply = pb.PullWeightsResponse(
            version=snapshot.version,
            global_frames=snapshot.global_frames,
            training_done=self.training_done.is_set(),
            target_version=target.version if target is not None else 0,
        )
        if request.have_version != snapshot.version:
            reply.parameters.extend(self._encoded_weights(snapshot, dtype))
        if target is not None and request.have_target_version != target.version:
            reply.target_parameters.extend(self._encoded_weights(target, dtype))
        return reply

    @internal_on_unexpected
    def PushGradients(self, request: pb.PushGradientsRequest, context: grpc.ServicerContext):
        with self.metrics.push_latency.time():
            return self._push_gradients(request, context)

    def _push_gradients(
        self, request: pb.PushGradientsRequest, context: grpc.ServicerContext
    ) -> pb.PushGradientsResponse:
        record = self._known_worker(request.worker_id, request.worker_secret, context, counts_as_rejection=True)
        with record.push_lock:
            if request.sequence_number == record.last_sequence != 0:  # a retry of a push already applied
                return self._push_reply(self.store.snapshot(), request.reply_weights_dtype)
            try:
                validation.check_push(request, record, self.config_message, self.store.snapshot())
                gradients = validation.decode_gradients(request, self.store.layout)
            except Refusal as refusal:
                self._reject(context, refusal)
            if self.training_done.is_set():
                snapshot = self.store.snapshot()
            else:
                snapshot = self._apply(request, gradients, context)
                # Applied: from here on the number is used, even if something below fails.
                record.last_sequence = request.sequence_number
                self.stats.record_update()
                self.stats.record_episodes([e.episode_return for e in request.episodes])
                self.stats.record_metrics(dict(request.metrics))
                record.pushes_applied += 1
                record.epsilons = list(request.epsilons)
                if self.on_push is not None:
                    self.on_push(snapshot.global_frames, request)
                self._check_training_done(snapshot.global_frames)
            return self._push_reply(snapshot, request.reply_weights_dtype)

    def _push_reply(self, snapshot: Snapshot, weights_dtype: int) -> pb.PushGradientsResponse:
        """The reply to a push: the snapshot's version and T, and its weights if asked for and training goes on.

        A retried push is answered from the current snapshot, not from a stored reply: keeping each
        worker's last reply would keep a private copy of the weights per worker (MBs each on Atari),
        while the weights of the current version are encoded once for everyone (_encoded_weights).
        """
        done = self.training_done.is_set()
        target = self.store.target()
        reply = pb.PushGradientsResponse(
            version=snapshot.version,
            global_frames=snapshot.global_frames,
            training_done=done,
            target_version=target.version if target is not None else 0,
        )
        if weights_dtype and not done:
            reply.parameters.extend(self._encoded_weights(snapshot, weights_dtype))
        return reply

    def _apply(self, request: pb.PushGradientsRequest, gradients: torch.Tensor,
               context: grpc.ServicerContext) -> Snapshot:
        """Applies a validated push; refused (nothing changed) only if it would carry T past int64."""
        staleness = self.store.version - request.base_version
        try:
            snapshot = self.store.apply(gradients, request.frames)
        except FramesOverflow as error:
            self._reject(context, Refusal(INVALID, "bad_frames", str(error)))
        self.metrics.staleness.observe(staleness)
        return snapshot

    @internal_on_unexpected
    def ReportEvaluation(self, request: pb.ReportEvaluationRequest, context: grpc.ServicerContext):
        record = self._known_worker(request.worker_id, request.worker_secret, context)
        with record.push_lock:
            try:
                validation.check_evaluation_report(request, record, self.store.version)
            except Refusal as refusal:
                self._reject(context, refusal)
            if not self.training_done.is_set():
                returns = [e.episode_return for e in request.episodes]
                self.stats.record_eval_episodes(returns)
                record.episodes_reported += len(returns)
                if self.on_evaluation is not None:
                    self.on_evaluation(self.store.global_frames, returns)
                self._check_training_done(self.store.global_frames)
            return pb.ReportEvaluationResponse(training_done=self.training_done.is_set(), version=self.store.version)

    @internal_on_unexpected
    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext):
        snapshot = self.store.snapshot()
        frames_per_second, updates_per_second = self.stats.rates(snapshot.global_frames)
        workers, registered, alive = self.registry.status()
        return pb.GetStatusResponse(
            global_frames=snapshot.global_frames,
            version=snapshot.version,
            updates_applied=self.stats.updates_applied,
            updates_rejected=self.stats.updates_rejected,
            live_workers=alive,
            workers=workers,
            registered_workers=registered,
            max_workers=self.registry.max_workers,
            mean_return_100=self.stats.mean_return(),
            episodes_completed=self.stats.episodes_completed,
            frames_per_second=frames_per_second,
            updates_per_second=updates_per_second,
            training_done=self.training_done.is_set(),
            learning_rate=self.store.learning_rate(),
            uptime_seconds=time.monotonic() - self.started,
            checkpoint_failures=sum(self.stats.checkpoint_failures.values()),
            eval_mean_return=self.stats.eval_mean_return(),
            eval_episodes_completed=self.stats.eval_episodes_completed,
            eval_window=self.config.eval_window,
            metrics={**self.stats.recent_metrics(),
                     **{UPDATE_RATIO_PREFIX + name: ratio for name, ratio in self.store.update_ratios.items()}},
        )

    def _encoded_weights(self, snapshot: Snapshot, dtype: int) -> list[pb.Tensor]:
        """A snapshot's parameters on the wire, encoded once per (version, dtype) however many workers ask.

        Only the newest online version and the current target are kept: older ones are not asked for again.
        """
        key = (snapshot.version, dtype)
        with self._encode_lock:
            encoded = self._encoded.get(key)
            if encoded is None:
                encoded = self.store.layout.encode(snapshot.parameters, dtype)
                target = self.store.target()
                wanted = {snapshot.version, self.store.version, target.version if target is not None else -1}
                self._encoded = {k: v for k, v in self._encoded.items() if k[0] in wanted}
                self._encoded[key] = encoded
            return encoded

    # --- validation -----------------------------------------------------------------------

    def _known_worker(
        self, worker_id: int, secret: bytes, context: grpc.ServicerContext, counts_as_rejection: bool = False
    ) -> WorkerRecord:
        try:
            return self.registry.seen(worker_id, secret)
        except WrongSecret:
            if counts_as_rejection:
                self.stats.record_rejection("wrong_secret")
            log.warning("refused a call naming worker %d without its secret", worker_id)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"worker_secret is not worker {worker_id}'s (use the one its RegisterWorkerResponse gave)")
            raise  # unreachable: abort raises
        except UnknownWorker:
            if counts_as_rejection:
                self.stats.record_rejection("unknown_worker")
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown worker id {worker_id}: call RegisterWorker (the server may have restarted)"
            )
            raise  # unreachable: abort raises

    def _reject(self, context: grpc.ServicerContext, refusal: Refusal) -> None:
        """Counts and logs a refused push or report, then answers it with the refusal's status."""
        self.stats.record_rejection(refusal.reason)
        log.warning("refused request (%s): %s", refusal.reason, refusal.message)
        if refusal.current_version is not None:
            context.set_trailing_metadata(((CURRENT_VERSION_KEY, str(refusal.current_version)),))
        context.abort(refusal.code, refusal.message)

    def _check_training_done(self, global_frames: int) -> None:
        """The run ends when T reaches the budget, or when the mean return that --target-on names reaches the target
        over a full window: the last 100 training episodes, or the last eval_window evaluation episodes."""
        target = self.config.target_return
        if self.config.target_on == "eval":
            which, window, mean = "evaluation", self.stats.eval_returns, self.stats.eval_mean_return
        else:
            which, window, mean = "training", self.stats.recent_returns, self.stats.mean_return
        reached_target = target is not None and len(window) == window.maxlen and mean() >= target
        if global_frames >= self.config.max_frames or reached_target:
            if not self.training_done.is_set():
                log.info(
                    "training done at T=%d: %s", global_frames,
                    f"{which} mean return {mean():.1f} >= {target}" if reached_target else "frame budget spent",
                )
            self.training_done.set()
