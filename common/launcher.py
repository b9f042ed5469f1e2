"""`asyncrl train`: one server and N workers as separate OS processes on localhost, with live progress.

The launcher is only a convenience around the daemons: it starts exactly the commands a
user would (`asyncrl server`, `asyncrl worker`), watches the run through GetStatus, and
stops everything cleanly on Ctrl-C.
"""

from __future__ import annotations

import csv
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from asyncrl.common.config import (
    ClientSecurity, RunConfig, ServerSecurity, TrainOptions, describe_preset, preset_baseline, to_cli_args, view,
)
from asyncrl.common.plot import plot_run
from asyncrl.common.progress import progress_line
from asyncrl.common.security import client_channel
from asyncrl.common import checkpoint
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

STATUS_FIELDS = ("global_frames", "version", "frames_per_second", "updates_per_second", "mean_return_100",
                 "episodes_completed", "live_workers")
# Diagnostics from GetStatus.metrics (the workers' recent means), as CSV columns; empty when not reported.
METRIC_COLUMNS = {"entropy": "losses/entropy", "explained_variance": "losses/explained_variance",
                  "grad_norm": "diagnostics/grad_norm"}
CSV_FIELDS = ("wall_seconds", *STATUS_FIELDS, "eval_mean_return", "eval_episodes_completed", *METRIC_COLUMNS)
_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.2


def _die_with_parent() -> None:
    """Runs in each child before exec: if the launcher dies, even by SIGKILL, the child gets SIGTERM."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _start(args: list[str], log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "asyncrl", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def _wait_for_port(port_file: Path, server: subprocess.Popen, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode} before serving")
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"the server did not start serving within {timeout:.0f}s")


def _move_earlier_checkpoints(checkpoint_dir: Path, previous: Path) -> None:
    """Each `asyncrl train` is a new run: an earlier run's checkpoints move aside (one run is kept back)."""
    if checkpoint.list_checkpoints(checkpoint_dir):
        shutil.rmtree(previous, ignore_errors=True)
        checkpoint_dir.rename(previous)
        print(f"asyncrl train: {checkpoint_dir} held an earlier run's checkpoints; moved them to {previous}/",
              flush=True)


def _stop(processes: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGTERM whatever still runs, wait, then SIGKILL stragglers: no orphans either way."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def train(config: RunConfig, options: TrainOptions) -> int:
    # Ctrl-C must stop the run cleanly even when the launcher inherited SIGINT as ignored (a shell without job
    # control ignores it for background commands, and Python then installs no KeyboardInterrupt handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_dir = Path(options.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    port_file = run_dir / "server.port"
    port_file.unlink(missing_ok=True)
    checkpoint_dir = run_dir / "checkpoints"
    _move_earlier_checkpoints(checkpoint_dir, run_dir / "previous-checkpoints")
    csv_path = run_dir / "progress.csv"
    client = view(ClientSecurity, options)  # the workers' security settings, and the launcher's own
    server_args = ["server", "--preset", config.preset, *to_cli_args(config, preset_baseline(config)), "--port", "0",
                   "--linger", "3", *to_cli_args(view(ServerSecurity, options))]
    # Shards other than 0 first: shard 0 tells workers their addresses.
    shards = _start_shards(server_args, run_dir, options.shards) if options.shards > 1 else []
    server = _start(
        [*server_args, *_shard_args(shards, run_dir), "--port-file", str(port_file),
         "--checkpoint-dir", str(checkpoint_dir), "--tensorboard-dir", str(run_dir / "tensorboard")],
        run_dir / "server.log",
    )
    processes = [server, *(process for process, _ in shards)]
    workers_from = len(processes)
    started = time.monotonic()
    print(f"asyncrl train: {describe_preset(config)}", flush=True)
    status = pb.GetStatusResponse()
    interrupted = False
    try:
        port = _wait_for_port(port_file, server)
        address = f"127.0.0.1:{port}"
        print(f"asyncrl train: {config.algo} on {config.env_id}, server at {address}, "
              f"{options.workers} workers x {options.envs} env copies; logs in {run_dir}/", flush=True)
        for index in range(options.workers):
            processes.append(_start(["worker", "--server", address, "--envs", str(options.envs),
                                     "--name", f"worker-{index}", *to_cli_args(client)],
                                    run_dir / f"worker-{index}.log"))
        for index in range(options.eval_workers):
            processes.append(_start(["worker", "--server", address, "--eval", "--envs", "1",
                                     "--name", f"eval-{index}", *to_cli_args(client)], run_dir / f"eval-{index}.log"))
        with client_channel(address, client) as channel, open(csv_path, "w", newline="") as csv_file:
            stub = pb_grpc.ParameterServerServiceStub(channel)
            writer = csv.DictWriter(csv_file, CSV_FIELDS)
            writer.writeheader()
            next_report = 0.0
            while server.poll() is None:
                time.sleep(POLL_SECONDS)  # notice the end of training promptly; report less often
                try:
                    status = stub.GetStatus(pb.GetStatusRequest(), timeout=5.0)
                except grpc.RpcError:
                    continue  # shutting down, or briefly busy; poll() decides
                now = time.monotonic()
                if now >= next_report or status.training_done:
                    writer.writerow(csv_row(status, now - started))
                    csv_file.flush()
                    print(progress_line(status), flush=True)
                    next_report = now + options.progress_interval
                if status.training_done:
                    break
        for worker in processes[workers_from:]:  # told that training is over, each exits by itself
            worker.wait(timeout=60)
    except KeyboardInterrupt:
        interrupted = True
        print("\nasyncrl train: interrupted; stopping the server (final checkpoint) and the workers", flush=True)
    finally:
        _stop(processes[workers_from:])
        _stop(processes[:workers_from])  # no need to wait out shard 0's linger: every worker has heard; SIGTERM
        # checkpoints; the other shards serve until stopped
    wall = time.monotonic() - started
    print(_summary(config, checkpoint_dir, csv_path, wall, interrupted), flush=True)
    if status.eval_episodes_completed:
        print(f"  evaluation mean     {status.eval_mean_return:.1f} over the last "
              f"{min(status.eval_window, status.eval_episodes_completed)} of {status.eval_episodes_completed:,d} "
              f"evaluation episodes ({config.eval_policy}, epsilon {config.eval_epsilon:g})", flush=True)
    if csv_path.exists():
        print(f"  learning curve      {plot_run(run_dir)}", flush=True)
    if server.returncode not in (0, -signal.SIGTERM):
        print(f"asyncrl train: the server exited with code {server.returncode}; see {run_dir / 'server.log'}",
              file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def _start_shards(server_args: list[str], run_dir: Path, count: int) -> list[tuple[subprocess.Popen, int]]:
    """Shards 1..count-1 of the server, serving: each with its checkpoints and log; (process, port) each.

    Their shard key is a file of random bytes in run_dir, readable only by this user.
    """
    key_file = run_dir / "shard.key"
    key_file.write_bytes(b"")
    key_file.chmod(0o600)
    key_file.write_text(secrets.token_hex(32) + "\n")
    shards = []
    for index in range(1, count):
        port_file = run_dir / f"server-shard-{index}.port"
        port_file.unlink(missing_ok=True)
        checkpoint_dir = run_dir / f"checkpoints-shard-{index}"
        _move_earlier_checkpoints(checkpoint_dir, run_dir / f"previous-checkpoints-shard-{index}")
        process = _start([*server_args, "--shards", str(count), "--shard-index", str(index),
                          "--shard-key-file", str(key_file), "--port-file", str(port_file),
                          "--checkpoint-dir", str(checkpoint_dir)], run_dir / f"server-shard-{index}.log")
        shards.append((process, port_file))
    return [(process, _wait_for_port(port_file, process)) for process, port_file in shards]


def _shard_args(shards: list[tuple[subprocess.Popen, int]], run_dir: Path) -> list[str]:
    """Shard 0's flags for a sharded run (none for one process): the slice map's addresses and the shard key."""
    if not shards:
        return []
    addresses = ",".join(["127.0.0.1:0", *(f"127.0.0.1:{port}" for _, port in shards)])  # shard 0's own is not told
    return ["--shards", str(len(shards) + 1), "--shard-index", "0", "--shard-addresses", addresses,
            "--shard-key-file", str(run_dir / "shard.key")]


def csv_row(status: pb.GetStatusResponse, wall_seconds: float) -> dict:
    """One progress.csv row; mean_return_100 stays empty until an episode has ended."""
    row: dict = {"wall_seconds": round(wall_seconds, 2), **{field: getattr(status, field) for field in STATUS_FIELDS}}
    if status.episodes_completed == 0:
        row["mean_return_100"] = ""
    row["eval_mean_return"] = status.eval_mean_return if status.eval_episodes_completed else ""
    row["eval_episodes_completed"] = status.eval_episodes_completed
    for column, name in METRIC_COLUMNS.items():
        row[column] = round(status.metrics[name], 6) if name in status.metrics else ""
    return row


def _summary(config: RunConfig, checkpoint_dir: Path, csv_path: Path, wall: float, interrupted: bool) -> str:
    """The run's outcome, read from the server's final checkpoint (the last word on T and returns)."""
    try:
        latest = checkpoint.load_latest(checkpoint_dir)
    except checkpoint.NoUsableCheckpoint as error:
        return f"\nasyncrl train: {'interrupted' if interrupted else 'stopped'} after {wall:.1f}s; {error}"
    if latest is None:
        return f"\nasyncrl train: {'interrupted' if interrupted else 'stopped'} after {wall:.1f}s; no checkpoint written"
    path, state = latest
    frames, version = state["store"]["global_frames"], state["store"]["version"]
    returns = state["recent_returns"]
    mean = f"{sum(returns) / len(returns):.1f}" if returns else "-"
    return (
        f"\nasyncrl train: {'interrupted' if interrupted else 'finished'} after {wall:.1f}s\n"
        f"  frames (T)          {frames:,d}  ({frames / max(wall, 1e-9):,.0f} frames/s overall)\n"
        f"  updates             {version:,d}\n"
        f"  mean return (100)   {mean} over {state['episodes_completed']:,d} episodes "
        f"(target {config.target_return}, budget {config.max_frames:,d} frames)\n"
        f"  final checkpoint    {path}\n"
        f"  progress log        {csv_path}\n"
        f"  TensorBoard         tensorboard --logdir {checkpoint_dir.parent / 'tensorboard'}"
    )
