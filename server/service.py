"""The ParameterServerService RPCs: validate each request, then hand it to the store, registry and stats."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable

import grpc
import torch

from asyncrl.common import tensors
from asyncrl.common.config import RunConfig
from asyncrl.common.seeding import derive_seed
from asyncrl.common.algorithms import METHODS
from asyncrl.server.metrics import ServerMetrics
from asyncrl.server.registry import UnknownWorker, WorkerRecord, WorkerRegistry
from asyncrl.server.stats import RunStats
from asyncrl.server.store import ParameterStore, Snapshot
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

CURRENT_VERSION_KEY = "asyncrl-current-version"
METRIC_NAME = re.compile(r"(losses|diagnostics)/[a-z0-9_]{1,64}(/[a-z0-9_]{1,64})?")
UPDATE_RATIO_PREFIX = "diagnostics/update_ratio/"
MAX_METRICS = 16


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
    ) -> None:
        self.config = config
        self.config_message = config_message
        self.store = store
        self.registry = registry
        self.stats = stats
        self.heartbeat_interval = heartbeat_interval
        self.metrics = metrics
        self.on_push = on_push  # called with (T, request) after each applied push, e.g. for TensorBoard
        self.training_done = threading.Event()
        self.started = time.monotonic()
        self._encoded: dict[tuple[int, int], list[pb.Tensor]] = {}
        self._encode_lock = threading.Lock()

    # --- RPCs -----------------------------------------------------------------------------

    def RegisterWorker(self, request: pb.RegisterWorkerRequest, context: grpc.ServicerContext):
        ours = METHODS[self.config.algo].wire
        if request.algorithm not in (pb.ALGORITHM_UNSPECIFIED, ours):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this server runs {pb.Algorithm.Name(ours)}, the worker implements "
                f"{pb.Algorithm.Name(request.algorithm) if request.algorithm in pb.Algorithm.values() else request.algorithm}",
            )
        if request.num_envs < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"num_envs must be >= 0, got {request.num_envs}")
        record = self.registry.register(request.name, request.num_envs)
        log.info("registered worker %d (%r, %d env copies)", record.worker_id, request.name, request.num_envs)
        return pb.RegisterWorkerResponse(
            worker_id=record.worker_id,
            seed=derive_seed(self.config.seed, record.worker_id),
            config=self.config_message,
            heartbeat_interval_seconds=self.heartbeat_interval,
        )

    def GetConfig(self, request: pb.GetConfigRequest, context: grpc.ServicerContext):
        return pb.GetConfigResponse(config=self.config_message)

    def PullWeights(self, request: pb.PullWeightsRequest, context: grpc.ServicerContext):
        with self.metrics.pull_latency.time():
            return self._pull_weights(request, context)

    def _pull_weights(self, request: pb.PullWeightsRequest, context: grpc.ServicerContext) -> pb.PullWeightsResponse:
        self._known_worker(request.worker_id, context)
        dtype = request.dtype or pb.DTYPE_FLOAT32
        if dtype not in tensors.TORCH_DTYPES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported dtype {dtype} for pulled weights")
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

    def PushGradients(self, request: pb.PushGradientsRequest, context: grpc.ServicerContext):
        with self.metrics.push_latency.time():
            return self._push_gradients(request, context)

    def _push_gradients(
        self, request: pb.PushGradientsRequest, context: grpc.ServicerContext
    ) -> pb.PushGradientsResponse:
        record = self._known_worker(request.worker_id, context, counts_as_rejection=True)
        with record.push_lock:
            if request.sequence_number == record.last_sequence and record.last_reply is not None:
                return record.last_reply  # a retry of a push already applied
            self._validate_push_header(request, record, context)
            gradients = self._decode_gradients(request, context)
            if self.training_done.is_set():
                snapshot = self.store.snapshot()
            else:
                self.metrics.staleness.observe(self.store.version - request.base_version)
                snapshot = self.store.apply(gradients, request.frames)
                self.stats.record_update()
                self.stats.record_episodes([e.episode_return for e in request.episodes])
                self.stats.record_metrics(dict(request.metrics))
                record.pushes_applied += 1
                record.epsilons = list(request.epsilons)
                if self.on_push is not None:
                    self.on_push(snapshot.global_frames, request)
                self._check_training_done(snapshot.global_frames)
            done = self.training_done.is_set()
            target = self.store.target()
            reply = pb.PushGradientsResponse(
                version=snapshot.version,
                global_frames=snapshot.global_frames,
                training_done=done,
                target_version=target.version if target is not None else 0,
            )
            if request.reply_weights_dtype and not done:
                reply.parameters.extend(self._encoded_weights(snapshot, request.reply_weights_dtype))
            record.last_sequence, record.last_reply = request.sequence_number, reply
            return reply

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext):
        snapshot = self.store.snapshot()
        frames_per_second, updates_per_second = self.stats.rates(snapshot.global_frames)
        workers = self.registry.status()
        return pb.GetStatusResponse(
            global_frames=snapshot.global_frames,
            version=snapshot.version,
            updates_applied=self.stats.updates_applied,
            updates_rejected=self.stats.updates_rejected,
            live_workers=sum(w.alive for w in workers),
            workers=workers,
            mean_return_100=self.stats.mean_return(),
            episodes_completed=self.stats.episodes_completed,
            frames_per_second=frames_per_second,
            updates_per_second=updates_per_second,
            training_done=self.training_done.is_set(),
            learning_rate=self.store.learning_rate(),
            uptime_seconds=time.monotonic() - self.started,
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
        self, worker_id: int, context: grpc.ServicerContext, counts_as_rejection: bool = False
    ) -> WorkerRecord:
        try:
            return self.registry.seen(worker_id)
        except UnknownWorker:
            if counts_as_rejection:
                self.stats.record_rejection("unknown_worker")
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown worker id {worker_id}: call RegisterWorker (the server may have restarted)"
            )
            raise  # unreachable: abort raises

    def _reject(self, context: grpc.ServicerContext, code: grpc.StatusCode, reason: str, message: str) -> None:
        self.stats.record_rejection(reason)
        log.warning("rejected push (%s): %s", reason, message)
        context.abort(code, message)

    def _validate_push_header(
        self, request: pb.PushGradientsRequest, record: WorkerRecord, context: grpc.ServicerContext
    ) -> None:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if request.sequence_number <= record.last_sequence:
            self._reject(
                context, invalid, "bad_sequence",
                f"sequence_number {request.sequence_number} is not above the last applied {record.last_sequence}",
            )
        if request.frames < 0:
            self._reject(context, invalid, "bad_frames", f"frames must be >= 0, got {request.frames}")
        current = self.store.version
        if request.base_version > current:
            self._reject(
                context, invalid, "bad_version", f"base_version {request.base_version} is newer than the server's {current}"
            )
        if current - request.base_version > self.config.max_staleness:
            context.set_trailing_metadata(((CURRENT_VERSION_KEY, str(current)),))
            self._reject(
                context, grpc.StatusCode.ABORTED, "stale",
                f"gradients computed against version {request.base_version} are more than "
                f"{self.config.max_staleness} updates behind the current version {current}: pull and recompute",
            )
        if request.reply_weights_dtype and request.reply_weights_dtype not in tensors.TORCH_DTYPES:
            self._reject(context, invalid, "bad_dtype", f"unsupported reply_weights_dtype {request.reply_weights_dtype}")
        if not all(0.0 <= epsilon <= 1.0 for epsilon in request.epsilons):  # NaN fails too
            self._reject(context, invalid, "bad_epsilon", f"epsilons must be in [0, 1], got {list(request.epsilons)}")
        if len(request.metrics) > MAX_METRICS or not all(
            METRIC_NAME.fullmatch(name) and math.isfinite(value) for name, value in request.metrics.items()
        ):
            self._reject(context, invalid, "bad_metrics",
                         f"metrics must be at most {MAX_METRICS} finite values named (losses|diagnostics)/[a-z0-9_]+, "
                         f"got {dict(request.metrics)}")
        for episode in request.episodes:
            if not (math.isfinite(episode.episode_return) and episode.length >= 0):
                self._reject(context, invalid, "bad_episode", f"episode result {episode} is not finite")

    def _decode_gradients(self, request: pb.PushGradientsRequest, context: grpc.ServicerContext) -> torch.Tensor:
        """The push's gradients as one flat float32 vector in the layout, or the push is refused."""
        layout = self.store.layout
        try:
            gradient = layout.decode(request.gradients, "gradients")
        except tensors.TensorFormatError as error:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, "bad_layout", str(error))
            raise  # unreachable: abort raises
        finite = torch.isfinite(gradient)
        if not finite.all():
            name = layout.locate(int(torch.argmin(finite.to(torch.uint8))))
            self._reject(
                context, grpc.StatusCode.INVALID_ARGUMENT, "not_finite", f"gradient {name!r} contains NaN or Inf"
            )
        return gradient

    def _check_training_done(self, global_frames: int) -> None:
        target = self.config.target_return
        reached_target = (
            target is not None and len(self.stats.recent_returns) == 100 and self.stats.mean_return() >= target
        )
        if global_frames >= self.config.max_frames or reached_target:
            if not self.training_done.is_set():
                log.info(
                    "training done at T=%d: %s", global_frames,
                    f"mean return {self.stats.mean_return():.1f} >= {target}" if reached_target else "frame budget spent",
                )
            self.training_done.set()
