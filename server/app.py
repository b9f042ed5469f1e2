"""The server daemon's lifecycle: build or resume a run, serve it over gRPC, checkpoint, shut down cleanly."""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from asyncrl.common.config import ConfigError, RunConfig, ServerOptions, describe_preset
from asyncrl.common.limits import max_request_bytes
from asyncrl.common.tensors import FlatLayout
from asyncrl.common.wire import run_config_message
from asyncrl.common import checkpoint
from asyncrl.server import auth
from asyncrl.server.interceptors import InternalOnUnexpected, Latency
from asyncrl.server.metrics import ServerMetrics
from asyncrl.server.registry import WorkerRegistry
from asyncrl.server.restore import new_run, restored_run
from asyncrl.server.run import Run
from asyncrl.server.service import ParameterServerServicer
from asyncrl.server.shards import ShardMap, read_shard_key
from asyncrl.server.stats import RunStats
from asyncrl.server.tensorboard import TensorBoardLog
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ParameterServerService"].full_name


def message_options(max_message_bytes: int, max_receive_bytes: int | None = None) -> list[tuple[str, int]]:
    """Channel options raising gRPC's 4 MiB default on both directions (receiving max_receive_bytes, if given), for
    servers and clients alike."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes if max_receive_bytes is None else max_receive_bytes),
    ]


def build_run(config: RunConfig, options: ServerOptions, tensorboard: TensorBoardLog | None = None) -> Run:
    """A fresh run from config, or, with --resume, the newest checkpoint that verifies and fits its model.

    Raises NoUsableCheckpoint when --resume finds checkpoints and none of them is usable, and ConfigError
    when the directory holds checkpoints but --resume is not set. With --shards, the run is this shard's.
    """
    shard_map = functools.partial(ShardMap.of, options)
    checkpoint_dir = Path(options.checkpoint_dir)
    earlier = checkpoint.list_checkpoints(checkpoint_dir)
    if earlier and not options.resume:
        # A new run's checkpoints would sort below the earlier run's higher versions and be pruned as the
        # oldest at once, and a later --resume would pick up the earlier run.
        raise ConfigError(f"--checkpoint-dir {checkpoint_dir} holds checkpoints of an earlier run (newest "
                          f"{earlier[-1].name}): pass --resume to continue it, or give an empty directory")
    checkpoint.remove_stale_temp_files(checkpoint_dir)
    restored = (checkpoint.load_latest(checkpoint_dir, functools.partial(restored_run, shard_map=shard_map))
                if options.resume else None)
    if restored is not None:
        path, parts = restored
        log.info("resuming from %s: T=%d, version %d", path, parts.store.global_frames, parts.store.version)
    else:
        if options.resume:
            log.info("--resume: no checkpoint in %s, starting a new run", options.checkpoint_dir)
        parts = new_run(config, shard_map)
    first_id = parts.next_worker_id
    if options.resume:  # after every id given out before, checkpointed or not
        first_id = max(first_id, checkpoint.load_next_worker_id(checkpoint_dir) or 1)
    max_message_bytes = int(options.max_message_mb * 2**20)
    return Run(
        parts,
        run_config_message(parts.config, parts.spec, max_message_bytes),
        WorkerRegistry(options.silence_timeout, first_id,
                       functools.partial(_record_next_worker_id, checkpoint_dir, parts.stats), options.max_workers,
                       read_shard_key(options.shard_key_file) if parts.shards.sharded else None),
        on_push=tensorboard.record_push if tensorboard is not None else None,
        on_evaluation=tensorboard.record_evaluation if tensorboard is not None else None,
    )


def _record_next_worker_id(directory: Path, stats: RunStats, next_id: int) -> bool:
    """Persists the next worker id; returns whether it was written. A failed write is logged and counted, and the
    registration goes on (the next registration writes again).

    Refusing workers because the disk is full would stop the run; the cost of going on is that
    a server SIGKILLed before its next checkpoint could give an id out twice after --resume.
    """
    try:
        checkpoint.save_next_worker_id(directory, next_id)
    except OSError as error:
        stats.record_checkpoint_failure("next_worker_id")
        log.error("could not record the next worker id %d in %s: %s", next_id, directory, error)
        return False
    return True


def _configure_health_server(server: grpc.Server) -> health.HealthServicer:
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return health_servicer


def _set_health(health_servicer: health.HealthServicer, status: int) -> None:
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, status)


def create_server(
    run: Run, options: ServerOptions, metrics: ServerMetrics | None = None
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A gRPC server of run with the service, health and reflection, bound but not started; returns (server, port,
    health).

    With --auth-token-file every call but health checks needs the token; with --tls-cert it serves TLS only.
    """
    metrics = metrics or ServerMetrics()
    max_message_bytes = int(options.max_message_mb * 2**20)
    latency = Latency({f"/{SERVICE_NAME}/PushGradients": metrics.push_latency,
                       f"/{SERVICE_NAME}/PullWeights": metrics.pull_latency})
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="rpc"),
        interceptors=[*auth.interceptors(options), latency, InternalOnUnexpected()],
        # Requests no larger than this run's largest valid one: a client cannot make the server buffer more. A shard
        # too takes a push of the whole model, to refuse it with FAILED_PRECONDITION and a reason (Run.layout).
        options=message_options(max_message_bytes, min(max_message_bytes, max_request_bytes(
            run.config_message, FlatLayout(run.config_message.model.layout)))),
    )
    servicer = ParameterServerServicer(run, options.heartbeat_interval, metrics)
    pb_grpc.add_ParameterServerServiceServicer_to_server(servicer, server)
    health_servicer = _configure_health_server(server)
    reflection.enable_server_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                         reflection.SERVICE_NAME), server)
    credentials = auth.server_credentials(options)
    address = f"{options.host}:{options.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {options.host}:{options.port}")
    return server, port, health_servicer


def serve(config: RunConfig, options: ServerOptions) -> int:
    """Runs the daemon until SIGTERM/SIGINT, or until --linger seconds after training is done."""
    try:
        tensorboard = TensorBoardLog(options.tensorboard_dir) if options.tensorboard_dir else None
    except OSError as error:
        raise ConfigError(f"--tensorboard-dir {options.tensorboard_dir}: cannot write there ({error})") from None
    run = build_run(config, options, tensorboard)
    metrics = ServerMetrics()
    server, port, health_servicer = create_server(run, options, metrics)
    metrics.watch(run.status, lambda: dict(run.stats.rejections), lambda: dict(run.stats.checkpoint_failures))
    if options.metrics_port:
        metrics.serve(options.host, options.metrics_port)
        log.info("Prometheus metrics on http://%s:%d/metrics", options.host, options.metrics_port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    server.start()
    _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    if options.port_file:
        Path(options.port_file).write_text(f"{port}\n")
    log.info("serving %s on %s:%d (%s on %s; %s, %s)", SERVICE_NAME, options.host, port,
             run.config.algo, run.config.env_id,
             ("mutual TLS" if options.tls_client_ca else "TLS") if options.tls_cert else "plaintext",
             "bearer token required" if options.auth_token_file else "no token")
    log.info("%s", describe_preset(run.config))
    if run.shards.sharded:
        log.info("%s (%d parameters in all)", run.shards.describe(), run.shards.total)
    checkpoint_dir = Path(options.checkpoint_dir)
    next_checkpoint = time.monotonic() + options.checkpoint_interval
    next_log = time.monotonic() + 10.0
    next_tensorboard = time.monotonic() + 2.0
    tensorboard_failing = False
    done_since: float | None = None
    while not stop.wait(0.25):
        now = time.monotonic()
        if run.training_done:
            if done_since is None:
                done_since = now
                _save(run, checkpoint_dir, options)
            if now - done_since >= options.linger:
                log.info("training done %.0fs ago; shutting down", options.linger)
                break
        elif options.checkpoint_interval > 0 and now >= next_checkpoint:
            _save(run, checkpoint_dir, options)
            next_checkpoint = now + options.checkpoint_interval
        if now >= next_log:
            _log_progress(run)
            next_log = now + 10.0
        if tensorboard is not None and now >= next_tensorboard:
            tensorboard_failing = _write_tensorboard(run, tensorboard, tensorboard_failing)
            next_tensorboard = now + 2.0
    _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    server.stop(options.shutdown_grace).wait()
    saved = _save(run, checkpoint_dir, options)
    if tensorboard is not None:
        _write_tensorboard(run, tensorboard, tensorboard_failing, closing=True)
    log.info("stopped at T=%d, version %d", run.store.global_frames, run.store.version)
    if not saved:
        log.error("the final checkpoint could not be written: --resume would lose the updates since the last one")
    return 0 if saved else 1


def _save(run: Run, directory: Path, options: ServerOptions) -> bool:
    """Writes a checkpoint; a failure (a full disk) is logged and counted, and the server serves on.

    Returns whether the checkpoint was written. The periodic loop tries again at the next interval.
    """
    state = run.state_dict()
    version, frames = state["store"]["version"], state["store"]["global_frames"]
    try:
        path = checkpoint.save(directory, version, state, options.keep_checkpoints)
    except OSError as error:
        run.stats.record_checkpoint_failure("checkpoint")
        log.error("checkpoint of version %d (T=%d) in %s failed: %s", version, frames, directory, error)
        return False
    log.info("checkpoint %s (T=%d, version %d)", path, frames, version)
    return True


def _write_tensorboard(run: Run, tensorboard: TensorBoardLog, failing: bool, closing: bool = False) -> bool:
    """Writes the TensorBoard events (and closes the file when closing); returns whether the write failed.

    A failure (a full disk) is counted beside the checkpoint failures, under "tensorboard", and
    logged once until the events are written again: its events are lost, and the server serves on.
    """
    try:
        tensorboard.flush(run.status())
    except OSError as error:
        run.stats.record_checkpoint_failure("tensorboard")
        if not failing or closing:
            log.error("TensorBoard events in %s could not be written (counted with the checkpoint failures; "
                      "their events are lost, the server serves on and tries again every 2s): %s",
                      tensorboard.directory, error)
        return True
    finally:
        if closing:
            tensorboard.close()  # unbuffered: closing writes nothing, so it cannot fail on a full disk
    if failing:
        log.info("TensorBoard events in %s are written again", tensorboard.directory)
    return False


def _log_progress(run: Run) -> None:
    status = run.status()
    log.info(
        "T=%d version=%d fps=%.0f updates/s=%.1f mean_return_100=%.1f live_workers=%d rejected=%d%s",
        status.global_frames, status.version, status.frames_per_second, status.updates_per_second,
        status.mean_return_100, status.live_workers, status.updates_rejected,
        f" eval_mean_return={status.eval_mean_return:.1f}" if status.eval_episodes_completed else "",
    )
