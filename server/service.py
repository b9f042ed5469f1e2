"""The ParameterServerService RPCs: decode a request, check what needs no state, hand it to the Run, encode the answer.

The run's state and every change to it belong to asyncrl.server.run.Run; timing calls and
turning unexpected errors into INTERNAL are interceptors (asyncrl.server.interceptors),
authentication too (asyncrl.server.auth). What is left here is the wire: messages in,
Refusals to status codes, messages out.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from asyncrl.common.tensors import FlatLayout
from asyncrl.server import validation
from asyncrl.server.metrics import ServerMetrics
from asyncrl.server.run import Run, Weights
from asyncrl.server.store import Snapshot
from asyncrl.server.validation import Refusal
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

CURRENT_VERSION_KEY = "asyncrl-current-version"


class ParameterServerServicer(pb_grpc.ParameterServerServiceServicer):
    def __init__(self, run: Run, heartbeat_interval: float, metrics: ServerMetrics) -> None:
        self.run = run
        self.heartbeat_interval = heartbeat_interval
        self.metrics = metrics

    def RegisterWorker(self, request: pb.RegisterWorkerRequest, context: grpc.ServicerContext):
        try:
            validation.check_registration(request, self.run.config_message.algorithm)
            record, seed = self.run.register(request.name, request.num_envs, request.evaluation)
        except Refusal as refusal:
            log.warning("refused registration of %r (%s): %s", request.name[:40], refusal.reason, refusal.message)
            context.abort(refusal.code, refusal.message)
        log.info("registered %s worker %d (%r, %d env copies)", "evaluation" if record.evaluation else "training",
                 record.worker_id, request.name, request.num_envs)
        return pb.RegisterWorkerResponse(
            worker_id=record.worker_id,
            seed=seed,
            config=self.run.config_message,
            heartbeat_interval_seconds=self.heartbeat_interval,
            worker_secret=record.secret,
            shards=self.run.shards.infos(),
        )

    def GetConfig(self, request: pb.GetConfigRequest, context: grpc.ServicerContext):
        return pb.GetConfigResponse(config=self.run.config_message)

    def PullWeights(self, request: pb.PullWeightsRequest, context: grpc.ServicerContext):
        try:
            validation.check_pull(request)
            layout = self.run.layout(request.sliced)
            self.run.worker(request.worker_id, request.worker_secret, first_contact=True)
        except Refusal as refusal:
            self._refuse(context, refusal, counted=False)
        weights = self.run.pull()
        dtype = request.dtype or pb.DTYPE_FLOAT32
        reply = pb.PullWeightsResponse(
            version=weights.snapshot.version,
            global_frames=weights.snapshot.global_frames,
            training_done=weights.training_done,
            target_version=weights.target_version,
        )
        if request.have_version != weights.snapshot.version:
            reply.parameters.extend(self._encoded(weights.snapshot, layout, dtype))
        if weights.target is not None and request.have_target_version != weights.target.version:
            reply.target_parameters.extend(self._encoded(weights.target, layout, dtype))
        return reply

    def PushGradients(self, request: pb.PushGradientsRequest, context: grpc.ServicerContext):
        try:
            record = self.run.worker(request.worker_id, request.worker_secret)
            layout = self.run.layout(request.sliced)
            gradients = validation.decode_gradients(request, layout)
            weights = self.run.push(record, request, gradients)
        except Refusal as refusal:
            self._refuse(context, refusal)
        if weights.staleness is not None:
            self.metrics.staleness.observe(weights.staleness)
        return self._push_reply(weights, layout, request.reply_weights_dtype)

    def _push_reply(self, weights: Weights, layout: FlatLayout, dtype: int) -> pb.PushGradientsResponse:
        """The version and T after the push (or, for a retry, now), and those weights if asked for and training goes on.

        A retried push is answered from the current snapshot, not from a stored reply: keeping each
        worker's last reply would keep a private copy of the weights per worker (MBs each on Atari),
        while a snapshot's encoding is made once for everyone.
        """
        reply = pb.PushGradientsResponse(
            version=weights.snapshot.version,
            global_frames=weights.snapshot.global_frames,
            training_done=weights.training_done,
            target_version=weights.target_version,
        )
        if dtype and not weights.training_done:
            reply.parameters.extend(self._encoded(weights.snapshot, layout, dtype))
        return reply

    def ReportEvaluation(self, request: pb.ReportEvaluationRequest, context: grpc.ServicerContext):
        try:
            done = self.run.report_evaluation(request)
        except Refusal as refusal:
            self._refuse(context, refusal)
        return pb.ReportEvaluationResponse(training_done=done, version=self.run.store.version)

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext):
        return self.run.status()

    def _encoded(self, snapshot: Snapshot, layout: FlatLayout, dtype: int) -> list[pb.Tensor]:
        return snapshot.encoded((tuple(layout.names), dtype), lambda parameters: layout.encode(parameters, dtype))

    def _refuse(self, context: grpc.ServicerContext, refusal: Refusal, counted: bool = True) -> NoReturn:
        """Logs a refused request and answers it with the refusal's status; pushes and reports are also counted."""
        if counted:
            self.run.stats.record_rejection(refusal.reason)
        log.warning("refused request (%s): %s", refusal.reason, refusal.message)
        if refusal.current_version is not None:
            context.set_trailing_metadata(((CURRENT_VERSION_KEY, str(refusal.current_version)),))
        context.abort(refusal.code, refusal.message)
        raise AssertionError("unreachable: abort raises")
