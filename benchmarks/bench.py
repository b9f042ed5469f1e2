"""asyncrl's benchmark on CartPole-v1 (or an Atari game): what the wire costs, and how long training takes.

    .venv/bin/python benchmarks/bench.py [--seconds 10] [--envs 1]
    .venv/bin/python benchmarks/bench.py --env-id ALE/Pong-v5 --envs 4 --skip-train [--network atari-lstm]
        [--dtype float16] [--score-frames 20000]

One run measures, in this order, and prints one table (plain, then markdown for README.md):

1. the in-process baseline: the real Worker loop on an InProcessConnection (benchmarks/
   inprocess.py: the store in the same process, no RPC, no encoding), one torch thread,
   in its own process; env frames/s over --seconds after --warmup;
2. distributed: a real `asyncrl server` and 1, then 2, `asyncrl worker --envs E` processes
   (a fresh server each), env frames/s from GetStatus global_frames over the same window,
   with the CPU each process used in it;
3. the ratios distributed(1 worker) / in-process and distributed(2 workers) / (2 x in-process);
4. PullWeights (have_version=-1) and PushGradients latency, p50 and p99, as the worker's
   GrpcConnection sees them (encode + RPC + server work + decode), against an idle server,
   and, to split a round trip, the servicer's handlers and ParameterStore.apply called
   directly in this process, and the client's encoding and decoding;
5. `asyncrl train --workers 2` to the default target (mean return 475 over 100 episodes):
   wall time, frames and the final mean return, read from the final checkpoint.

--env-id and --network go to the in-process RunConfig and to `asyncrl server`, --dtype to the
workers (and the latency client). For an Atari game (ALE/...) throughput is given both as
agent steps/s and as frames/s (an agent step is 4 emulator frames; the server's T, and so
every frames figure, counts frames), the time-to-475 run is CartPole's and needs
--skip-train, and a section gives the bytes moved per update: the ByteSize() of one
PushGradientsRequest and of one PushGradientsResponse carrying the weights, built with
asyncrl.common.tensors.FlatLayout.encode from the model's layout, in float32 and float16, for the FF
network (and the LSTM one with --network atari-lstm). --score-frames N adds a short
`asyncrl train --max-frames N --target-return none` run and reports the mean return it reached.

Progress goes to stderr; the table goes to stdout. The numbers are as noisy as the machine:
each process's CPU time is read from /proc over the same window, and frames per CPU-second
(server included) is printed beside frames/s, as the figure that other load disturbs least.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: one thread, like the daemons
# Children are started with a preexec_fn (a fork, not a vfork) while this process has gRPC channels. gRPC's
# fork handlers then restart its poller in the forked child, racing the fd closing before exec: about 1 start
# in 300 died of SIGABRT ("epoll_wait error: Bad file descriptor"); none in 1,500 with the handlers off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse  # noqa: E402
import csv  # noqa: E402
import ctypes  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import grpc  # noqa: E402
import torch  # noqa: E402

from asyncrl.common import checkpoint, tensors  # noqa: E402
from asyncrl.common.algorithms import METHODS  # noqa: E402
from asyncrl.common.config import (  # noqa: E402
    ALGORITHMS, DTYPE_NAMES, NETWORKS, RunConfig, ServerOptions, WorkerOptions,
)
from asyncrl.common.envs import ATARI_FRAME_SKIP, is_atari  # noqa: E402
from asyncrl.common.models import build_model  # noqa: E402
from asyncrl.common.wire import model_spec  # noqa: E402
from asyncrl.server.app import build_run  # noqa: E402
from asyncrl.server.metrics import ServerMetrics  # noqa: E402
from asyncrl.server.service import ParameterServerServicer  # noqa: E402
from asyncrl.v1 import parameter_server_pb2 as pb  # noqa: E402
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc  # noqa: E402
from asyncrl.worker.client import GrpcConnection, Update, load  # noqa: E402
from asyncrl.worker.daemon import Worker  # noqa: E402
from asyncrl.worker.rpc_process import ProcessCalls  # noqa: E402

HERE = Path(__file__).resolve().parent
CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
NO_END = str(10**12)  # a frame budget no measurement reaches (it also keeps the linear lr schedule flat)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
SHORT_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class Run:
    """What every measurement runs: the method, the env, the network, and the workers' wire dtype."""

    algo: str = "a3c"
    env_id: str = "CartPole-v1"
    network: str = "auto"
    dtype: str = "float32"

    def config(self, **overrides: object) -> RunConfig:
        return RunConfig(algo=self.algo, env_id=self.env_id, network=self.network, **overrides)

    def run_flags(self) -> list[str]:
        """`asyncrl server|train` flags for the run (the defaults left out, so a CartPole run is what it was)."""
        flags = ["--algo", self.algo]
        if self.env_id != "CartPole-v1":
            flags += ["--env-id", self.env_id]
        if self.network != "auto":
            flags += ["--network", self.network]
        return flags

    def worker_flags(self) -> list[str]:
        return ["--dtype", self.dtype] if self.dtype != "float32" else []

    @property
    def frames_per_step(self) -> int:
        return ATARI_FRAME_SKIP if is_atari(self.env_id) else 1


def note(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Runs in each child before exec: if the benchmark dies, even by SIGKILL, its children get SIGTERM."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tree_cpu_seconds(pid: int) -> float:
    """utime + stime of pid and, recursively, of the children it has now (Linux); nan once pid has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
    except OSError:
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)
    return own + sum(seconds for seconds in map(_tree_cpu_seconds, children) if not math.isnan(seconds))


class Child:
    """An `asyncrl` subcommand as its own OS process, its output in a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "asyncrl", *args], stdout=log, stderr=subprocess.STDOUT, env=CHILD_ENV,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the process and its descendants (a worker's RPC process), from /proc."""
        return _tree_cpu_seconds(self.popen.pid)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"`asyncrl {' '.join(self.args)}` exited with {self.popen.returncode}:\n"
                               f"{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class Server(Child):
    """`asyncrl server` on 127.0.0.1 with a free port, for a run that never ends by itself."""

    def __init__(self, directory: Path, run: Run, flags: Sequence[str] = ()) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        port_file = directory / "server.port"
        super().__init__(
            ["server", *run.run_flags(), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
             "--checkpoint-dir", str(directory / "checkpoints"), "--checkpoint-interval", "0",
             "--target-return", "none", "--max-frames", NO_END, "--log-level", "WARNING", *flags],
            directory / "server.log",
        )
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            self.check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start serving within 60s")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.ParameterServerServiceStub(self.channel)

    def status(self) -> pb.GetStatusResponse:
        return self.stub.GetStatus(pb.GetStatusRequest(), timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        if hasattr(self, "channel"):
            self.channel.close()
        super().stop(timeout)


# --- 1. the in-process baseline ----------------------------------------------------------------


def in_process(envs: int, warmup: float, seconds: float, run: Run) -> dict:
    """benchmarks/inprocess.py in a fresh process (one torch thread); its JSON result."""
    command = [sys.executable, str(HERE / "inprocess.py"), "--algo", run.algo, "--env-id", run.env_id,
               "--network", run.network, "--envs", str(envs), "--warmup", str(warmup), "--seconds", str(seconds)]
    done = subprocess.run(command, env=CHILD_ENV, capture_output=True, text=True, timeout=warmup + seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- 2. distributed ------------------------------------------------------------------------------


def distributed(workers: int, envs: int, warmup: float, seconds: float, directory: Path, run: Run) -> dict:
    """A fresh server and `workers` worker processes; env frames/s from GetStatus over the window."""
    server = Server(directory, run)
    children: list[Child] = []
    try:
        for index in range(workers):
            children.append(Child(["worker", "--server", server.address, "--envs", str(envs),
                                   "--name", f"bench-{index}", *run.worker_flags(), "--log-level", "WARNING"],
                                  directory / f"worker-{index}.log"))
        deadline = time.monotonic() + 120  # every worker has started pushing (torch imports take a while)
        while True:
            status = server.status()
            if len(status.workers) == workers and all(w.pushes_applied > 0 for w in status.workers):
                break
            for child in (server, *children):
                child.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not all start pushing within 120s")
            time.sleep(0.1)
        time.sleep(warmup)
        cpu0 = [child.cpu_seconds() for child in (server, *children)]
        first, t0 = server.status(), time.perf_counter()
        time.sleep(seconds)
        last, t1 = server.status(), time.perf_counter()
        cpu1 = [child.cpu_seconds() for child in (server, *children)]
        for child in (server, *children):
            child.check_alive()
    finally:
        for child in children:
            child.stop()
        server.stop()
    elapsed = t1 - t0
    cores = [(b - a) / elapsed for a, b in zip(cpu0, cpu1)]
    return {
        "workers": workers,
        "envs": envs,
        "frames_per_second": (last.global_frames - first.global_frames) / elapsed,
        "updates_per_second": (last.version - first.version) / elapsed,
        "rejected": last.updates_rejected - first.updates_rejected,
        "server_cores": cores[0],
        "worker_cores": cores[1:],
        "seconds": elapsed,
    }


# --- 4. latency ----------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest sample with at least q% of the samples at or below it."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def timed(call: Callable[[], object], count: int, warmup: int) -> list[float]:
    """Seconds per call, for `count` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def latency(calls: int, directory: Path, run: Run) -> dict:
    """Pull and push round trips against an idle server, through the worker's own GrpcConnection."""
    server = Server(directory, run)
    stop = threading.Event()
    options = WorkerOptions(server=server.address, dtype=run.dtype)
    connection = GrpcConnection(options.dtype, ProcessCalls(options, stop))
    try:
        # Real gradients of the model layout: the Worker's own rollout and loss, at the server's weights.
        worker = Worker(connection, "bench-latency", 1, stop, overlap=False)
        registered = worker.register()
        reply = connection.pull(registered.worker_id, None)
        load(worker.weights, reply.weights)
        rollout = worker.actor.rollout(worker.model, worker.method.rollout_steps(worker.config))
        frames = rollout.steps * worker.actor.frames_per_step  # what the worker reports: T counts frames
        worker.actor.close()
        if worker.target_model is not None:
            worker.target_weights.copy_(worker.weights)
        worker.method.loss(worker.model, worker.target_model, rollout, worker.config).total.backward()
        gradients = worker.gradients.clone()
        state = {"versions": reply.versions}

        def pull() -> None:
            connection.pull(registered.worker_id, None)

        def push() -> None:
            update = Update(state["versions"], frames, gradients)
            state["versions"] = connection.start_push(registered.worker_id, update).result().versions

        warm = max(10, calls // 10)
        pulls = timed(pull, calls, warm)
        pushes = timed(push, calls, warm)
        # The client's own share of a push: encoding the gradients and decoding the reply's weights.
        layout = connection.layout
        wire = tensors.WIRE_DTYPES[run.dtype]
        message = pb.PushGradientsResponse(parameters=layout.encode(gradients, wire))
        encode = timed(lambda: layout.encode(gradients, wire), calls, warm)
        decode = timed(lambda: layout.decode(message.parameters), calls, warm)
        payload = sum(len(t.data) for t in message.parameters)
        handler_push, handler_pull, apply = server_handlers(run, gradients, frames, calls, warm, directory)
    finally:
        connection.close()
        server.stop()
    return {
        "pull_p50": percentile(pulls, 50), "pull_p99": percentile(pulls, 99), "pull_mean": statistics.fmean(pulls),
        "push_p50": percentile(pushes, 50), "push_p99": percentile(pushes, 99), "push_mean": statistics.fmean(pushes),
        "encode_p50": percentile(encode, 50), "decode_p50": percentile(decode, 50),
        "handler_push_p50": percentile(handler_push, 50), "handler_pull_p50": percentile(handler_pull, 50),
        "apply_p50": percentile(apply, 50),
        "payload_bytes": payload, "parameters": gradients.numel(), "calls": calls,
        "architecture": worker.config.model.architecture,
    }


def server_handlers(
    run: Run, gradients: torch.Tensor, frames: int, calls: int, warm: int, directory: Path
) -> tuple[list[float], list[float], list[float]]:
    """The server's own work per call: the servicer's PushGradients / PullWeights called directly, no gRPC.

    The same servicer and Run `asyncrl server` builds (build_run), in this process; the requests
    are encoded once beforehand, so what is timed is validation, decoding, the update and
    the reply's weights (push) or the cached encoded weights (pull). Third: the update rule
    alone (ParameterStore.apply on decoded gradients).
    """
    options = ServerOptions(checkpoint_dir=str(directory / "handler-checkpoints"))
    servicer = ParameterServerServicer(build_run(run.config(target_return=None, max_frames=int(NO_END)), options),
                                       options.heartbeat_interval, ServerMetrics())
    registration = servicer.RegisterWorker(pb.RegisterWorkerRequest(name="bench-handler", num_envs=1), None)
    worker_id, secret = registration.worker_id, registration.worker_secret
    wire = tensors.WIRE_DTYPES[run.dtype]
    encoded = servicer.run.store.layout.encode(gradients, wire)
    state = {"version": 0, "sequence": 0}

    def push() -> None:
        state["sequence"] += 1
        request = pb.PushGradientsRequest(worker_id=worker_id, base_version=state["version"],
                                          sequence_number=state["sequence"], frames=frames, gradients=encoded,
                                          reply_weights_dtype=wire, worker_secret=secret)
        state["version"] = servicer.PushGradients(request, None).version  # a valid push never touches the context

    pull_request = pb.PullWeightsRequest(worker_id=worker_id, have_version=-1, dtype=wire, worker_secret=secret)
    pushes = timed(push, calls, warm)
    pulls = timed(lambda: servicer.PullWeights(pull_request, None), calls, warm)
    applies = timed(lambda: servicer.run.store.apply(gradients.clone(), frames), calls, warm)
    return pushes, pulls, applies


# --- 5. time to the target -----------------------------------------------------------------------


def train_to_target(
    workers: int, envs: int, max_frames: int, timeout: float, directory: Path, run: Run, target: bool = True
) -> dict:
    """`asyncrl train` with the default target (475), or with none (target=False: the whole frame budget);
    the outcome from its final checkpoint. (`asyncrl train` starts its workers with the default dtype.)"""
    directory.mkdir(parents=True, exist_ok=True)
    run_dir = directory / "run"
    command = [sys.executable, "-m", "asyncrl", "train", *run.run_flags(), "--workers", str(workers),
               "--envs", str(envs), "--run-dir", str(run_dir), "--max-frames", str(max_frames),
               "--progress-interval", "1", *([] if target else ["--target-return", "none"])]
    log_path = directory / "train.log"
    started = time.perf_counter()
    timed_out = False
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=CHILD_ENV,
                                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            launcher.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True  # Ctrl-C: the launcher stops the workers, the server writes its final checkpoint
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
    wall = time.perf_counter() - started
    latest = checkpoint.load_latest(run_dir / "checkpoints")
    if latest is None:
        raise RuntimeError(f"`asyncrl train` left no checkpoint (exit {launcher.returncode}):\n"
                           f"{log_path.read_text(errors='replace')[-3000:]}")
    _, state = latest
    returns = list(state["recent_returns"])
    mean = sum(returns) / len(returns) if returns else 0.0
    rows = list(csv.DictReader(open(run_dir / "progress.csv"))) if (run_dir / "progress.csv").exists() else []
    return {
        "reached": target and len(returns) == 100 and mean >= 475.0,
        "training_done": bool(state["training_done"]),
        "frames": int(state["store"]["global_frames"]),
        "updates": int(state["store"]["version"]),
        "mean_return_100": mean,
        "returns": len(returns),
        "episodes": int(state["episodes_completed"]),
        "wall": wall,  # launcher start to exit: process start-up and shutdown included
        "wall_to_done": float(rows[-1]["wall_seconds"]) if rows else float("nan"),  # launcher's last status poll
        "timed_out": timed_out,
        "exit_code": launcher.returncode,
        "max_frames": max_frames,
    }


# --- 6. bytes moved per update ------------------------------------------------------------------


def update_bytes(run: Run, network: str, dtype: str, envs: int) -> dict:
    """ByteSize() of one PushGradientsRequest and of one PushGradientsResponse carrying the weights.

    Real messages, built as GrpcConnection.start_push and the servicer build them, from the layout
    of the network the server would serve for this env (model_spec), with every tensor
    encoded by asyncrl.common.tensors.FlatLayout.encode in the wire dtype. No episodes ride along
    (a finished episode adds about 20 B); the loss metrics do. gRPC and HTTP/2 framing add
    a few dozen bytes more.
    """
    config = RunConfig(algo=run.algo, env_id=run.env_id, network=network)
    spec = model_spec(config)
    torch.manual_seed(config.seed)
    layout = tensors.FlatLayout(spec.layout)
    wire = tensors.WIRE_DTYPES[dtype]
    encoded = layout.encode(layout.flatten(build_model(spec).parameters()), wire)
    value_based = METHODS[run.algo].value_based
    metrics = ({"losses/q_loss": 0.0, "losses/mean_q": 0.0} if value_based
               else {"losses/policy_loss": 0.0, "losses/value_loss": 0.0, "losses/entropy": 0.0})
    request = pb.PushGradientsRequest(
        worker_id=1, base_version=1_000_000, sequence_number=1_000_000,
        frames=config.t_max * envs * run.frames_per_step, gradients=encoded, reply_weights_dtype=wire,
        epsilons=[0.1] * envs if value_based else [], metrics=metrics,
    )
    reply = pb.PushGradientsResponse(version=1_000_001, global_frames=40_000_000, training_done=False,
                                     parameters=encoded, target_version=0)
    return {
        "network": spec.architecture, "dtype": dtype, "parameters": layout.total,
        "request": request.ByteSize(), "reply": reply.ByteSize(),
        "tensor_data": sum(len(t.data) for t in encoded),
    }


# --- report --------------------------------------------------------------------------------------


def machine() -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"date      {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine   nproc {usable} ({os.cpu_count()} online), CPU {model}, load average {load}",
        f"software  Python {platform.python_version()}, torch {torch.__version__}, grpcio {grpc.__version__}",
    ]


@dataclass
class Table:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, value: str) -> None:
        self.rows.append((what, value))

    def plain(self) -> str:
        width = max(len(w) for w, _ in self.rows)
        return "\n".join(f"{w:<{width}}  {v}" for w, v in self.rows)

    def markdown(self) -> str:
        lines = ["| measurement | result |", "|---|---|"]
        lines += [f"| {w} | {v} |" for w, v in self.rows]
        return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="asyncrl benchmark on CartPole-v1 or an Atari game "
                                                 "(see the module docstring)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput window (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds run before each window (default 3)")
    parser.add_argument("--envs", type=int, default=1,
                        help="env copies per worker, in-process and distributed alike (default 1)")
    parser.add_argument("--algo", default="a3c", choices=ALGORITHMS, help="learning method (default a3c)")
    parser.add_argument("--env-id", default="CartPole-v1",
                        help="gymnasium env id, e.g. ALE/Pong-v5 (default CartPole-v1)")
    parser.add_argument("--network", default="auto", choices=NETWORKS,
                        help="the run's --network: auto, mlp, atari (FF), atari-lstm (default auto)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES,
                        help="the workers' --dtype for pulled weights and pushed gradients (default float32)")
    parser.add_argument("--compute-envs", default="1,4",
                        help="also measure the in-process baseline at these --envs values, comma-separated "
                             "('' to skip; default 1,4)")
    parser.add_argument("--calls", type=int, default=300, help="timed pulls and pushes each (default 300)")
    parser.add_argument("--train-workers", type=int, default=2,
                        help="workers for the time-to-475 run and the --score-frames run (default 2)")
    parser.add_argument("--train-max-frames", type=int, default=1_000_000,
                        help="frame budget of the time-to-475 run (default 1,000,000)")
    parser.add_argument("--train-timeout", type=float, default=150.0,
                        help="stop the time-to-475 run (Ctrl-C) after this many seconds (default 150)")
    parser.add_argument("--skip-train", action="store_true", help="leave out the time-to-475 run")
    parser.add_argument("--score-frames", type=int, default=0,
                        help="also run `asyncrl train --workers TRAIN_WORKERS --envs ENVS --max-frames N "
                             "--target-return none` and report the mean return reached (default 0: off)")
    parser.add_argument("--score-timeout", type=float, default=600.0,
                        help="stop the --score-frames run (Ctrl-C) after this many seconds (default 600)")
    args = parser.parse_args(argv)
    if args.envs < 1 or args.seconds <= 0 or args.warmup < 0 or args.calls < 1 or args.score_frames < 0:
        parser.error("--envs and --calls must be >= 1, --seconds > 0, --warmup >= 0, --score-frames >= 0")
    if not args.skip_train and args.env_id != "CartPole-v1":
        parser.error("the time-to-475 run is CartPole-v1's; pass --skip-train (and --score-frames N) for "
                     f"{args.env_id}")
    run = Run(args.algo, args.env_id, args.network, args.dtype)
    try:
        model_spec(run.config())  # a bad env id or network stops here, before any measurement
    except ValueError as error:
        parser.error(str(error))
    atari = is_atari(run.env_id)
    compute_envs = sorted({int(e) for e in args.compute_envs.split(",") if e.strip()} - {args.envs})
    torch.set_num_threads(1)
    started = time.perf_counter()
    header = machine()
    E = args.envs

    with tempfile.TemporaryDirectory(prefix="asyncrl-bench-") as temp:
        work = Path(temp)
        note(f"in-process baseline, envs={E}: {args.warmup:g}s warm-up + {args.seconds:g}s")
        base = in_process(E, args.warmup, args.seconds, run)
        compute = {E: base}
        for envs in compute_envs:
            note(f"in-process baseline, envs={envs}")
            compute[envs] = in_process(envs, args.warmup, args.seconds, run)
        note(f"distributed: server + 1 worker x {E} envs")
        one = distributed(1, E, args.warmup, args.seconds, work / "dist1", run)
        note(f"distributed: server + 2 workers x {E} envs")
        two = distributed(2, E, args.warmup, args.seconds, work / "dist2", run)
        note(f"latency: {args.calls} pulls and {args.calls} pushes")
        lat = latency(args.calls, work / "latency", run)
        train = None
        if not args.skip_train:
            note(f"asyncrl train --workers {args.train_workers} --envs {E} to mean return 475 "
                 f"(budget {args.train_max_frames:,d} frames, stopped after {args.train_timeout:g}s)")
            train = train_to_target(args.train_workers, E, args.train_max_frames, args.train_timeout, work / "train",
                                    run)
        score = None
        if args.score_frames:
            note(f"asyncrl train --workers {args.train_workers} --envs {E} --max-frames {args.score_frames:,d} "
                 f"--target-return none (stopped after {args.score_timeout:g}s)")
            score = train_to_target(args.train_workers, E, args.score_frames, args.score_timeout, work / "score",
                                    run, target=False)
    sizes = []  # bytes moved per update: the Atari FF network, and the LSTM one when it is the run's
    if atari:
        for network in ["atari", *(["atari-lstm"] if run.network == "atari-lstm" else [])]:
            sizes += [update_bytes(run, network, dtype, E) for dtype in ("float32", "float16")]

    def rate(frames_per_second: float) -> str:
        """Frames/s, and for Atari agent steps/s first (an agent step is frames_per_step frames)."""
        if not atari:
            return f"{frames_per_second:,.0f}"
        return f"{frames_per_second / run.frames_per_step:,.0f} / {frames_per_second:,.0f}"

    unit = "(agent steps/s / frames/s)" if atari else "(frames/s)"
    wire_name = SHORT_DTYPE[run.dtype]
    table = Table()
    fps = base["frames_per_second"]
    table.add(f"in-process baseline, 1 worker x {E} envs {unit}",
              f"{rate(fps)}  ({base['updates_per_second']:,.0f} updates/s; CPU cores {base['cpu_cores']:.2f}; "
              f"store.apply {base['apply_fraction']:.0%} of the time)")
    for result in (one, two):
        workers_cpu = " + ".join(f"{c:.2f}" for c in result["worker_cores"])
        table.add(f"distributed, {result['workers']} worker{'s' if result['workers'] > 1 else ''} x {E} envs {unit}",
                  f"{rate(result['frames_per_second'])}  ({result['updates_per_second']:,.0f} updates/s; CPU cores: "
                  f"server {result['server_cores']:.2f}, workers {workers_cpu}; {result['rejected']} rejected)")
    table.add("ratio distributed(1 worker) / in-process", f"{one['frames_per_second'] / fps:.2f}  (target >= 0.8)")
    table.add("ratio distributed(2 workers) / (2 x in-process)",
              f"{two['frames_per_second'] / (2 * fps):.2f}  (target >= 0.8)")
    table.add(f"PullWeights(have_version=-1) p50 / p99 (ms), {lat['calls']} calls",
              f"{ms(lat['pull_p50'])} / {ms(lat['pull_p99'])}")
    table.add(f"PushGradients ({wire_name}, weights in reply) p50 / p99 (ms), {lat['calls']} calls",
              f"{ms(lat['push_p50'])} / {ms(lat['push_p99'])}")
    per_cpu = [fps / base["cpu_cores"]] + [
        r["frames_per_second"] / (r["server_cores"] + sum(r["worker_cores"])) for r in (one, two)
    ]
    table.add("frames per CPU-second: in-process / 1 worker / 2 workers (server included)",
              " / ".join(f"{x:,.0f}" for x in per_cpu) + f"  (ratios {per_cpu[1] / per_cpu[0]:.2f} / "
              f"{per_cpu[2] / per_cpu[0]:.2f}; less sensitive to other load)")
    if train is not None:
        if train["reached"]:
            outcome = (f"reached: {train['wall_to_done']:.0f} s, {train['frames']:,d} frames "
                       f"(mean return {train['mean_return_100']:.1f}; process wall {train['wall']:.0f} s)")
        else:
            why = (f"stopped after {args.train_timeout:g} s" if train["timed_out"]
                   else f"budget of {train['max_frames']:,d} frames spent" if train["training_done"]
                   else f"launcher exited {train['exit_code']}")
            outcome = (f"NOT reached ({why}): {train['frames']:,d} frames in {train['wall']:.0f} s, "
                       f"mean return {train['mean_return_100']:.1f}")
        table.add(f"to mean return 475, asyncrl train --workers {args.train_workers} --envs {E}", outcome)
    if score is not None:
        if score["returns"]:
            outcome = (f"{score['mean_return_100']:.1f} over the last {score['returns']} of {score['episodes']} "
                       f"episodes")
        else:
            outcome = "no episode finished"
        stopped = f"stopped after {args.score_timeout:g} s; " if score["timed_out"] else ""
        table.add(f"mean return after {args.score_frames:,d} frames, asyncrl train --workers {args.train_workers} "
                  f"--envs {E}",
                  f"{outcome}  ({stopped}{score['frames']:,d} frames, {score['updates']:,d} updates in "
                  f"{score['wall']:.0f} s, start-up included)")
    for envs in sorted(compute):
        table.add(f"compute only (in-process), envs={envs} {unit}",
                  f"{rate(compute[envs]['frames_per_second'])}  "
                  f"({compute[envs]['updates_per_second']:,.0f} updates/s)")
    for size in sizes:
        both = size["request"] + size["reply"]
        at = one["updates_per_second"] if size["dtype"] == run.dtype and size["network"] == lat["architecture"] else None
        table.add(f"bytes moved per update, {size['network']} ({size['parameters']:,d} params), "
                  f"{SHORT_DTYPE[size['dtype']]}: PushGradients request / reply with weights",
                  f"{size['request']:,d} B / {size['reply']:,d} B  ({both / 1e6:.2f} MB per update both ways"
                  + (f"; {both * at / 1e6:.0f} MB/s at the 1-worker rate)" if at else ")"))

    per_update_local = 1e3 / base["updates_per_second"]
    per_update_remote = 1e3 / one["updates_per_second"]
    notes = [
        f"per update (1 worker): in-process {per_update_local:.2f} ms, distributed {per_update_remote:.2f} ms "
        f"({per_update_remote - per_update_local:+.2f} ms; a push round trip alone is "
        f"{ms(lat['push_p50'])} ms p50)",
        f"CPU per update (1 worker): in-process {1e3 * base['cpu_cores'] / base['updates_per_second']:.2f} ms; "
        f"distributed worker {1e3 * one['worker_cores'][0] / one['updates_per_second']:.2f} ms + server "
        f"{1e3 * one['server_cores'] / one['updates_per_second']:.2f} ms",
        f"client side of a push: encode gradients {lat['encode_p50'] * 1e6:.0f} us, decode reply weights "
        f"{lat['decode_p50'] * 1e6:.0f} us ({lat['parameters']:,d} parameters, {lat['payload_bytes']:,d} B "
        f"{wire_name} each way)",
        f"server side, handlers called directly (no gRPC): PushGradients {ms(lat['handler_push_p50'])} ms p50, "
        f"of which ParameterStore.apply {ms(lat['apply_p50'])} ms; PullWeights {ms(lat['handler_pull_p50'])} ms; "
        f"the rest of a round trip is gRPC (both ends) and the client's encoding",
        f"total benchmark time {time.perf_counter() - started:.0f} s; load average now "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    if atari:
        notes.insert(0, f"an agent step is {run.frames_per_step} emulator frames; frames (the server's T) = "
                        f"{run.frames_per_step} x agent steps")
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if usable < 3:
            notes.insert(1, f"with {usable} usable cores, 2 workers (about a core each) and the server (about "
                            f"{1e3 * one['server_cores'] / one['updates_per_second']:.0f} ms of CPU per update) "
                            f"cannot all run at once: the 2-worker ratio is bounded well below 1 here")
    if score is not None:
        notes.append("the --score-frames run uses `asyncrl train` defaults (float32 workers, learning rate "
                     "2e-3 annealed linearly to 0 over its frame budget)")
    if base["cpu_cores"] < 0.9:
        notes.insert(0, f"WARNING: the in-process baseline got {base['cpu_cores']:.2f} of a core (other load on the "
                        "machine): the wall-clock ratios are unreliable; frames per CPU-second is the steadier figure")
    title = f"asyncrl benchmark: {run.algo} on {run.env_id}"
    if run.network != "auto":
        title += f", network {run.network}"
    if run.dtype != "float32":
        title += f", workers --dtype {run.dtype}"
    print("\n".join([title, *header, "", table.plain(), "", *notes, "",
                     "markdown:", "", table.markdown()]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
