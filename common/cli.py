"""The `asyncrl` command line: server, worker, train and status, with flags derived from common.config."""

from __future__ import annotations

import ctypes
import os
import sys

# One BLAS/OpenMP thread per process, set before torch loads: W workers then use W cores,
# and forked or spawned children cannot hang on a thread pool they inherit.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _keep_large_buffers_on_the_heap() -> None:
    """glibc maps each multi-MB allocation (tensor bytes, protobuf messages, gRPC buffers) afresh and unmaps
    it when freed, so every 2.7 MB Atari push page-faults ~20 MB back in: ~10 ms of CPU an update, measured.
    Raising the mmap and trim thresholds keeps such buffers on the heap (up to ~128 MB retained a process)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD, at glibc's 64-bit maximum
    libc.mallopt(-1, 128 * 2**20)  # M_TRIM_THRESHOLD


_keep_large_buffers_on_the_heap()

import argparse  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

from asyncrl.common.config import (  # noqa: E402
    ClientOptions,
    ConfigError,
    RunConfig,
    ServerOptions,
    TrainOptions,
    WorkerOptions,
    add_arguments,
    from_namespace,
    run_config_from,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncrl",
        description="Asynchronous deep RL (Mnih et al., 2016) with a gRPC parameter server and worker daemons. "
        "Every flag can also be set through the environment variable named in its help.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server = commands.add_parser("server", help="run the parameter-server daemon")
    add_arguments(server, RunConfig, "run")
    add_arguments(server, ServerOptions, "server")
    worker = commands.add_parser("worker", help="run a worker daemon that connects to a server")
    add_arguments(worker, WorkerOptions, "worker")
    train = commands.add_parser("train", help="train locally: a server and workers as separate processes")
    add_arguments(train, TrainOptions, "launcher")
    add_arguments(train, RunConfig, "run")
    status = commands.add_parser("status", help="print a server's status")
    add_arguments(status, ClientOptions, "connection")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    evaluate = commands.add_parser("eval", help="play a checkpoint's policy and report the scores")
    evaluate.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint file written by the server")
    evaluate.add_argument("--env", default=None, metavar="ID", help="environment id (default: the checkpoint's)")
    evaluate.add_argument("--episodes", type=_positive_int, default=10, help="episodes to play (default: 10)")
    evaluate.add_argument("--sample", action="store_true",
                          help="sample actions (softmax for A3C, epsilon 0.05 for Q) instead of acting greedily")
    evaluate.add_argument("--record", type=Path, default=None, metavar="DIR", help="save the first episode as a GIF")
    evaluate.add_argument("--max-steps", type=_positive_int, default=None, help="cut episodes after this many steps")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the episodes (default: 0)")
    plot = commands.add_parser("plot", help="write RUN_DIR/learning_curve.png from a run's progress.csv")
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    health = commands.add_parser(
        "health", help="exit 0 if a server's gRPC health service says SERVING, else 1 (for container healthchecks)"
    )
    add_arguments(health, ClientOptions, "connection")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from asyncrl.common.checkpoint import CheckpointError, NoUsableCheckpoint
    from asyncrl.common.envs import EnvSpecError

    try:
        return _run(args)
    except (ConfigError, EnvSpecError, CheckpointError, NoUsableCheckpoint) as error:
        parser.exit(2, f"asyncrl {args.command}: error: {error}\n")
    except KeyboardInterrupt:
        return 130


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s", stream=sys.stderr
    )


def _run_config(args: argparse.Namespace) -> RunConfig:
    """The run's config on its env's preset; the env is made here first, so that a bad env id or an env
    asyncrl can't train (or can't train with this method) ends the command with one line before any
    process starts."""
    import functools

    from asyncrl.common.envs import env_dimensions
    from asyncrl.common.wire import model_spec

    dimensions = functools.cache(env_dimensions)
    config = run_config_from(args, image_observations=lambda env_id: len(dimensions(env_id)[0]) == 3,
                             continuous_actions=lambda env_id: dimensions(env_id)[1].continuous)
    model_spec(config)  # refuses a method or network that the env's spaces rule out
    return config


def _run(args: argparse.Namespace) -> int:
    if args.command == "server":
        run_config, options = _run_config(args), from_namespace(ServerOptions, args)
        configure_logging(options.log_level)
        from asyncrl.server.app import serve

        return serve(run_config, options)
    if args.command == "worker":
        worker_options = from_namespace(WorkerOptions, args)
        configure_logging(worker_options.log_level)
        from asyncrl.worker.daemon import run_worker

        return run_worker(worker_options)
    if args.command == "train":
        from asyncrl.common.presets import PRESETS

        run_config = _run_config(args)
        train_options = from_namespace(TrainOptions, args, defaults=PRESETS[run_config.preset].launcher)
        if run_config.target_on == "eval" and train_options.eval_workers == 0:
            raise ConfigError("--target-on eval: the evaluation mean needs evaluation workers (--eval-workers N)")
        from asyncrl.common.launcher import train

        return train(run_config, train_options)
    if args.command == "eval":
        from asyncrl.worker.evaluate import evaluate

        if not args.checkpoint.is_file():
            raise ConfigError(f"--checkpoint {args.checkpoint}: no such file")
        evaluate(args.checkpoint, args.env, args.episodes, not args.sample, args.record, args.max_steps, args.seed)
        return 0
    if args.command == "plot":
        from asyncrl.common.plot import plot_run

        try:
            print(f"wrote {plot_run(args.run_dir)}")
        except FileNotFoundError as error:
            raise ConfigError(str(error)) from None
        return 0
    client = from_namespace(ClientOptions, args)
    if args.command == "health":
        return _check_health(client, args.timeout)
    return _print_status(client, args.timeout)


def _check_health(client: ClientOptions, timeout: float) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from asyncrl.common.security import client_channel

    address = client.server
    with client_channel(address, client) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as error:
            print(f"asyncrl health: {address}: {error.code().name}", file=sys.stderr)
            return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"asyncrl health: {address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return 0 if serving else 1


def _print_status(client: ClientOptions, timeout: float) -> int:
    """GetStatus on a channel whose receive limit is the server's advertised maximum (GetConfig, a small reply, first)."""
    import grpc

    from asyncrl.common.progress import status_report
    from asyncrl.common.security import client_channel
    from asyncrl.v1 import parameter_server_pb2 as pb
    from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

    try:
        with client_channel(client.server, client) as channel:
            config = pb_grpc.ParameterServerServiceStub(channel).GetConfig(pb.GetConfigRequest(), timeout=timeout).config
        limit = [("grpc.max_receive_message_length", max(config.max_message_bytes, 4 * 2**20))]
        with client_channel(client.server, client, limit) as channel:
            status = pb_grpc.ParameterServerServiceStub(channel).GetStatus(pb.GetStatusRequest(), timeout=timeout)
    except grpc.RpcError as error:
        unreachable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        print(f"asyncrl status: {'cannot reach ' if unreachable else ''}{client.server}: {error.code().name} "
              f"({error.details()})", file=sys.stderr)
        return 1
    print(status_report(status))
    return 0
