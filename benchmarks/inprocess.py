"""The in-process baseline: the real Worker loop on a ParameterStore in the same process, with no RPC and no encoding.

InProcessConnection implements the worker's Connection protocol (register/pull/push) on
the same RunConfig, model spec, initial weights and update rule that `asyncrl server`
builds (see server/app.py: build_servicer), so the only thing missing compared with a
distributed run is the wire: gRPC, protobuf and tensor encoding.

Run as a script it measures the baseline's env frames/s in a fresh process:

    .venv/bin/python benchmarks/inprocess.py --seconds 10 --envs 1

and prints one JSON line (used by benchmarks/bench.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads, as the daemons do

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from asyncrl.common.algorithms import METHODS  # noqa: E402
from asyncrl.common.config import ALGORITHMS, NETWORKS, RunConfig  # noqa: E402
from asyncrl.common.models import build_model  # noqa: E402
from asyncrl.common.seeding import derive_seed  # noqa: E402
from asyncrl.common.tensors import FlatLayout  # noqa: E402
from asyncrl.common.wire import model_spec, run_config_message  # noqa: E402
from asyncrl.server.stats import RunStats  # noqa: E402
from asyncrl.server.store import ParameterStore, Snapshot  # noqa: E402
from asyncrl.v1 import parameter_server_pb2 as pb  # noqa: E402
from asyncrl.worker.client import AnsweredPush, ServerReply, Update  # noqa: E402
from asyncrl.worker.daemon import Worker  # noqa: E402

MAX_MESSAGE_BYTES = 64 * 2**20  # ServerOptions.max_message_mb's default; only advertised, never enforced here


class InProcessConnection:
    """A Connection straight onto a ParameterStore: the server's semantics for one well-behaved worker, minus the wire.

    Weights are handed over as the store's flat snapshot vectors (never mutated, so no copy
    is needed) and gradients as the worker's own flat vector (which it zeroes before its
    next backward pass, so the store clipping it in place is harmless). Validation
    (staleness, sequence numbers, finiteness) is left out: one in-process worker is never
    stale and never sends garbage.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        spec = model_spec(config)
        torch.manual_seed(config.seed)  # the same initial weights as build_servicer
        layout = FlatLayout(spec.layout)
        self.store = ParameterStore(layout, layout.flatten(build_model(spec).parameters()), config,
                                    has_target=METHODS[config.algo].value_based)
        self.stats = RunStats()
        self.config_message = run_config_message(config, spec, MAX_MESSAGE_BYTES)
        self.training_done = False
        self._next_worker_id = 1
        self.push_seconds = 0.0  # time spent inside push (the update rule plus bookkeeping)

    def register(self, name: str, num_envs: int, algorithm: int) -> pb.RegisterWorkerResponse:
        if algorithm not in (pb.ALGORITHM_UNSPECIFIED, self.config_message.algorithm):
            raise ValueError(f"this run is {self.config.algo}; the worker asked for algorithm {algorithm}")
        worker_id, self._next_worker_id = self._next_worker_id, self._next_worker_id + 1
        return pb.RegisterWorkerResponse(
            worker_id=worker_id,
            seed=derive_seed(self.config.seed, worker_id),  # as the servicer derives it
            config=self.config_message,
            heartbeat_interval_seconds=5.0,
        )

    def pull(self, worker_id: int, have_version: int, have_target_version: int = -1) -> ServerReply:
        snapshot, target = self.store.snapshot(), self.store.target()
        weights = None if have_version == snapshot.version else snapshot.parameters
        target_weights = None
        if target is not None and have_target_version != target.version:
            target_weights = target.parameters
        return self._reply(snapshot, weights, target_weights)

    def start_push(self, worker_id: int, update: Update) -> AnsweredPush:
        """Applies the gradients now, as the servicer does; epsilons and loss metrics are only reported, so dropped."""
        started = time.perf_counter()
        if self.training_done:
            snapshot = self.store.snapshot()
        else:
            snapshot = self.store.apply(update.gradients, update.frames)
            self.stats.record_update()
            self.stats.record_episodes([episode_return for episode_return, _ in update.episodes])
            self._check_training_done(snapshot.global_frames)
        reply = self._reply(snapshot, None if self.training_done else snapshot.parameters, None)
        self.push_seconds += time.perf_counter() - started
        return AnsweredPush(reply)

    def _reply(
        self, snapshot: Snapshot, weights: torch.Tensor | None, target_weights: torch.Tensor | None
    ) -> ServerReply:
        target = self.store.target()
        return ServerReply(snapshot.version, snapshot.global_frames, self.training_done, weights,
                           target.version if target is not None else 0, target_weights)

    def _check_training_done(self, global_frames: int) -> None:
        """The servicer's rule: the frame budget is spent, or the last 100 returns reach the target."""
        target = self.config.target_return
        reached = target is not None and len(self.stats.recent_returns) == 100 and self.stats.mean_return() >= target
        self.training_done = self.training_done or global_frames >= self.config.max_frames or reached


def measure(config: RunConfig, num_envs: int, warmup: float, seconds: float) -> dict:
    """Runs the real Worker loop on an InProcessConnection; env frames/s over `seconds` after `warmup`."""
    torch.set_num_threads(1)
    connection = InProcessConnection(config)
    stop = threading.Event()
    worker = Worker(connection, "inprocess", num_envs, stop, overlap=False)  # nothing to overlap in-process
    result: dict = {}

    def timer() -> None:
        if stop.wait(warmup):
            return
        frames0, updates0, push0 = connection.store.global_frames, connection.store.version, connection.push_seconds
        cpu0, t0 = time.process_time(), time.perf_counter()
        if stop.wait(seconds):
            return
        frames1, updates1, push1 = connection.store.global_frames, connection.store.version, connection.push_seconds
        cpu1, t1 = time.process_time(), time.perf_counter()
        stop.set()
        elapsed = t1 - t0
        result.update(
            frames_per_second=(frames1 - frames0) / elapsed,
            updates_per_second=(updates1 - updates0) / elapsed,
            apply_fraction=(push1 - push0) / elapsed,
            cpu_cores=(cpu1 - cpu0) / elapsed,
            seconds=elapsed,
            frames=frames1 - frames0,
        )

    thread = threading.Thread(target=timer, name="timer", daemon=True)
    thread.start()
    worker.run()
    stop.set()
    thread.join()
    if not result:
        raise RuntimeError("the worker stopped before the measurement window ended (frame budget too small?)")
    result.update(envs=num_envs, mean_return_100=connection.stats.mean_return(), torch_threads=torch.get_num_threads())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=1, help="env copies in the worker (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds run before the window (default 3)")
    parser.add_argument("--env-id", default="CartPole-v1", help="gymnasium env id (default CartPole-v1)")
    parser.add_argument("--network", default="auto", choices=NETWORKS, help="the run's --network (default auto)")
    parser.add_argument("--algo", default="a3c", choices=ALGORITHMS)
    args = parser.parse_args(argv)
    # The same run the distributed measurement serves: no target, a budget it will not reach.
    config = RunConfig(algo=args.algo, env_id=args.env_id, network=args.network, target_return=None,
                       max_frames=10**12)
    print(json.dumps(measure(config, args.envs, args.warmup, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
