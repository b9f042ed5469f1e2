"""The server daemon's lifecycle: build or resume a run, serve it over gRPC, checkpoint, shut down cleanly."""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from asyncrl.common.config import RunConfig, ServerOptions, describe_preset
from asyncrl.common.models import build_model
from asyncrl.common.tensors import FlatLayout
from asyncrl.common.wire import model_spec, run_config_message
from asyncrl.common import checkpoint
from asyncrl.common.algorithms import METHODS
from asyncrl.server.metrics import ServerMetrics
from asyncrl.server.registry import WorkerRegistry
from asyncrl.server.service import ParameterServerServicer
from asyncrl.server.stats import RunStats
from asyncrl.server.store import ParameterStore
from asyncrl.server.tensorboard import TensorBoardLog
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ParameterServerService"].full_name
CHECKPOINT_FORMAT = 1


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel options raising gRPC's 4 MiB default on both directions, for servers and clients alike."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def build_servicer(
    config: RunConfig, options: ServerOptions, tensorboard: TensorBoardLog | None = None
) -> ParameterServerServicer:
    """A fresh run from config, or, with --resume and a checkpoint present, the checkpointed run."""
    checkpoint_dir = Path(options.checkpoint_dir)
    restored = checkpoint.load_latest(checkpoint_dir) if options.resume else None
    if restored is not None:
        path, state = restored
        config = RunConfig(**state["config"])
        log.info("resuming from %s: T=%d, version %d", path, state["store"]["global_frames"], state["store"]["version"])
    elif options.resume:
        log.info("--resume: no checkpoint in %s, starting a new run", options.checkpoint_dir)
    spec = model_spec(config)
    torch.manual_seed(config.seed)  # the initial weights; everything after comes from pushes
    model = build_model(spec)
    layout = FlatLayout(spec.layout)
    store = ParameterStore(layout, layout.flatten(model.parameters()), config, has_target=METHODS[config.algo].value_based)
    stats = RunStats()
    if restored is not None:
        store.load_state_dict(state["store"])
        stats = RunStats(list(state["recent_returns"]), int(state["episodes_completed"]))
        stats.updates_applied = int(state["updates_applied"])
    first_id = 1
    if options.resume:  # after every id given out before, checkpointed or not
        first_id = max(int(state.get("next_worker_id", 1)) if restored is not None else 1,
                       checkpoint.load_next_worker_id(checkpoint_dir) or 1)
    max_message_bytes = int(options.max_message_mb * 2**20)
    return ParameterServerServicer(
        config,
        run_config_message(config, spec, max_message_bytes),
        store,
        WorkerRegistry(options.silence_timeout, first_id,
                       functools.partial(checkpoint.save_next_worker_id, checkpoint_dir)),
        stats,
        options.heartbeat_interval,
        ServerMetrics(),
        on_push=tensorboard.record_push if tensorboard is not None else None,
    )


def checkpoint_state(servicer: ParameterServerServicer) -> dict:
    """Everything a resumed server needs, as plain tensors and Python values (loadable with weights_only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(servicer.config),
        "store": servicer.store.state_dict(),
        "recent_returns": list(servicer.stats.recent_returns),
        "episodes_completed": servicer.stats.episodes_completed,
        "updates_applied": servicer.stats.updates_applied,
        "next_worker_id": servicer.registry.next_id,
        "training_done": servicer.training_done.is_set(),
    }


def _configure_health_server(server: grpc.Server) -> health.HealthServicer:
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return health_servicer


def _set_health(health_servicer: health.HealthServicer, status: int) -> None:
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, status)


def create_server(
    servicer: ParameterServerServicer, options: ServerOptions
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A gRPC server with the service, health and reflection, bound but not started; returns (server, port, health)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="rpc"),
        options=message_options(int(options.max_message_mb * 2**20)),
    )
    pb_grpc.add_ParameterServerServiceServicer_to_server(servicer, server)
    health_servicer = _configure_health_server(server)
    reflection.enable_server_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                         reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{options.host}:{options.port}")
    if port == 0:
        raise OSError(f"cannot listen on {options.host}:{options.port}")
    return server, port, health_servicer


def serve(config: RunConfig, options: ServerOptions) -> int:
    """Runs the daemon until SIGTERM/SIGINT, or until --linger seconds after training is done."""
    tensorboard = TensorBoardLog(options.tensorboard_dir) if options.tensorboard_dir else None
    servicer = build_servicer(config, options, tensorboard)
    server, port, health_servicer = create_server(servicer, options)
    servicer.metrics.watch(lambda: servicer.GetStatus(pb.GetStatusRequest(), None), lambda: dict(servicer.stats.rejections))
    if options.metrics_port:
        servicer.metrics.serve(options.host, options.metrics_port)
        log.info("Prometheus metrics on http://%s:%d/metrics", options.host, options.metrics_port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    server.start()
    _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    if options.port_file:
        Path(options.port_file).write_text(f"{port}\n")
    log.info("serving %s on %s:%d (%s on %s)", SERVICE_NAME, options.host, port,
             servicer.config.algo, servicer.config.env_id)
    log.info("%s", describe_preset(servicer.config))
    checkpoint_dir = Path(options.checkpoint_dir)
    next_checkpoint = time.monotonic() + options.checkpoint_interval
    next_log = time.monotonic() + 10.0
    next_tensorboard = time.monotonic() + 2.0
    done_since: float | None = None
    while not stop.wait(0.25):
        now = time.monotonic()
        if servicer.training_done.is_set():
            if done_since is None:
                done_since = now
                _save(servicer, checkpoint_dir, options)
            if now - done_since >= options.linger:
                log.info("training done %.0fs ago; shutting down", options.linger)
                break
        elif options.checkpoint_interval > 0 and now >= next_checkpoint:
            _save(servicer, checkpoint_dir, options)
            next_checkpoint = now + options.checkpoint_interval
        if now >= next_log:
            _log_progress(servicer)
            next_log = now + 10.0
        if tensorboard is not None and now >= next_tensorboard:
            tensorboard.flush(servicer.GetStatus(pb.GetStatusRequest(), None))
            next_tensorboard = now + 2.0
    _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    server.stop(options.shutdown_grace).wait()
    _save(servicer, checkpoint_dir, options)
    if tensorboard is not None:
        tensorboard.flush(servicer.GetStatus(pb.GetStatusRequest(), None))
        tensorboard.close()
    log.info("stopped at T=%d, version %d", servicer.store.global_frames, servicer.store.version)
    return 0


def _save(servicer: ParameterServerServicer, directory: Path, options: ServerOptions) -> None:
    state = checkpoint_state(servicer)
    path = checkpoint.save(directory, state["store"]["version"], state, options.keep_checkpoints)
    log.info("checkpoint %s (T=%d, version %d)", path, servicer.store.global_frames, servicer.store.version)


def _log_progress(servicer: ParameterServerServicer) -> None:
    status = servicer.GetStatus(pb.GetStatusRequest(), None)
    log.info(
        "T=%d version=%d fps=%.0f updates/s=%.1f mean_return_100=%.1f live_workers=%d rejected=%d",
        status.global_frames, status.version, status.frames_per_second, status.updates_per_second,
        status.mean_return_100, status.live_workers, status.updates_rejected,
    )
