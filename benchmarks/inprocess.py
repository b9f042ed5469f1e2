"""The in-process baseline: the real Worker loop on a ParameterStore in the same process, with no RPC and no encoding.

InProcessConnection implements the worker's Connection protocol (register/pull/push) on
the same Run object that `asyncrl server` serves (see server/app.py: build_run), so the
only thing missing compared with a distributed run is the wire: gRPC, protobuf and
tensor encoding.

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

from asyncrl.common.config import ALGORITHMS, NETWORKS, RunConfig  # noqa: E402
from asyncrl.common.wire import run_config_message  # noqa: E402
from asyncrl.server.registry import WorkerRegistry  # noqa: E402
from asyncrl.server.restore import new_run  # noqa: E402
from asyncrl.server.run import Run, Weights  # noqa: E402
from asyncrl.v1 import parameter_server_pb2 as pb  # noqa: E402
from asyncrl.worker.client import AnsweredPush, ServerReply, Update, Versions  # noqa: E402
from asyncrl.worker.daemon import Worker  # noqa: E402

MAX_MESSAGE_BYTES = 64 * 2**20  # ServerOptions.max_message_mb's default; only advertised, never enforced here


class InProcessConnection:
    """A Connection straight onto a Run (server/run.py), the object `asyncrl server` serves: the same checks, update
    rule and end of training, minus the wire.

    Weights are handed over as the store's flat snapshot vectors (never mutated, so no copy
    is needed) and gradients as the worker's own flat vector (which it zeroes before its
    next backward pass, so the store clipping it in place is harmless); the rest of a push
    travels as its message without tensors, as the servicer hands it to the Run.
    """

    def __init__(self, config: RunConfig) -> None:
        parts = new_run(config)  # the same initial weights as `asyncrl server`
        self.run = Run(parts, run_config_message(config, parts.spec, MAX_MESSAGE_BYTES),
                       WorkerRegistry(silence_timeout=3600.0))
        self.secret = b""
        self.applied = 0  # the sequence number of the last push applied
        self.push_seconds = 0.0  # time spent inside push (the update rule plus bookkeeping)

    def register(self, name: str, num_envs: int, algorithm: int, evaluation: bool = False
                 ) -> pb.RegisterWorkerResponse:
        if algorithm not in (pb.ALGORITHM_UNSPECIFIED, self.run.config_message.algorithm):
            raise ValueError(f"this run is {self.run.config.algo}; the worker asked for algorithm {algorithm}")
        record, seed = self.run.register(name, num_envs, evaluation)
        self.secret, self.applied = record.secret, 0
        return pb.RegisterWorkerResponse(worker_id=record.worker_id, seed=seed, config=self.run.config_message,
                                         heartbeat_interval_seconds=5.0, worker_secret=record.secret)

    def pull(self, worker_id: int, have: Versions | None, have_target: Versions | None = None) -> ServerReply:
        self.run.worker(worker_id, self.secret)
        weights = self.run.pull()
        target = weights.target
        return self._reply(weights, have != (weights.snapshot.version,),
                           target.parameters if target is not None and have_target != (target.version,) else None)

    def start_push(self, worker_id: int, update: Update) -> AnsweredPush:
        started = time.perf_counter()
        request = pb.PushGradientsRequest(
            worker_id=worker_id, base_version=update.base_versions[0], sequence_number=self.applied + 1,
            frames=update.frames, episodes=[pb.EpisodeResult(episode_return=r, length=n) for r, n in update.episodes],
            epsilons=update.epsilons, metrics=update.metrics, worker_secret=self.secret,
        )
        weights = self.run.push(self.run.worker(worker_id, self.secret), request, update.gradients)
        self.applied += 1
        reply = self._reply(weights, not weights.training_done, None)
        self.push_seconds += time.perf_counter() - started
        return AnsweredPush(reply)

    @staticmethod
    def _reply(weights: Weights, with_parameters: bool, target_parameters: torch.Tensor | None) -> ServerReply:
        snapshot = weights.snapshot
        return ServerReply((snapshot.version,), snapshot.global_frames, weights.training_done,
                           ((0, snapshot.parameters),) if with_parameters else (), (weights.target_version,),
                           ((0, target_parameters),) if target_parameters is not None else ())


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
        frames0, updates0, push0 = connection.run.store.global_frames, connection.run.store.version, connection.push_seconds
        cpu0, t0 = time.process_time(), time.perf_counter()
        if stop.wait(seconds):
            return
        frames1, updates1, push1 = connection.run.store.global_frames, connection.run.store.version, connection.push_seconds
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
    result.update(envs=num_envs, mean_return_100=connection.run.stats.mean_return(), torch_threads=torch.get_num_threads())
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
