"""Updates/s of a server of one process and of K shards, with N synthetic workers pushing through the worker's own
connection.

    .venv/bin/python benchmarks/shards.py [--shards 1 2] [--workers 1 2 4] [--seconds 10]
        [--env-ids ALE/Pong-v5 CartPole-v1] [--dtypes float32]

Why: sharding (docs/sharding.md) splits a push's server work across K processes; this
measures what that buys on this machine, through the same client code a worker uses
(asyncrl.worker.client.GrpcConnection: the push of every slice started at once, the replies
gathered), so a K = 1 row and a K = 2 row differ only in the server.

For each env's layout, dtype, K and N: K shard processes (`asyncrl server --shards K
--shard-index I`, shard 0 told the others' addresses; for K = 1 a plain server) and N
pusher processes. Each pusher registers with shard 0, pulls, and pushes the same
precomputed random gradients (frames 5) as fast as it can, through the worker's RPC
processes (one per shard, so the slices travel at once), taking each reply's weights; a
stale push pulls again. Over --seconds after --warmup: updates/s
(shard 0's updates_applied), CPU per update of all the shards together, and push round-trip
p50/p99 at the pushers (the CPU of the pushers' RPC processes is not the server's). Progress goes to stderr, the machine and a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import torch

from bench import Run, Server, machine, note, percentile  # benchmarks/ is on sys.path
from capacity import CONTEXT, FRAMES, PRELOAD, SHORT_DTYPE, run_loop, measure, ms
from asyncrl.common.config import WorkerOptions
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.client import GrpcConnection, Update
from asyncrl.worker.outcomes import StaleGradients
from asyncrl.worker.rpc_process import ProcessCalls

KEY = "benchmark shard key, not a secret"


@dataclass(frozen=True)
class Row:
    env_id: str
    dtype: str
    shards: int
    workers: int
    updates_per_second: float
    cpu_per_update: float
    round_trips: list[float]


def pusher(address: str, dtype: str, ready: Connection, start: Event, stop: Event) -> None:
    """A synthetic worker on the worker's own connection: registers, then pushes the same gradients as fast as it
    can."""
    never = threading.Event()

    def calls_to(shard: str) -> ProcessCalls:
        return ProcessCalls(WorkerOptions(server=shard, dtype=dtype), never)

    connection = GrpcConnection(dtype, calls_to(address), connect=calls_to)
    registration = connection.register("shards-bench", 1, pb.ALGORITHM_UNSPECIFIED)
    gradients = 0.01 * torch.randn(connection.layout.total)
    versions = connection.pull(registration.worker_id, None).versions

    def push() -> None:
        nonlocal versions
        try:
            versions = connection.start_push(registration.worker_id, Update(versions, FRAMES, gradients)).result().versions
        except StaleGradients:
            versions = connection.pull(registration.worker_id, None).versions

    push()
    ready.send(None)
    run_loop(push, start, stop, ready)
    connection.close()


def start_server(directory: Path, env_id: str, shards: int) -> list[Server]:
    """A server of `shards` processes, shard 0 first."""
    run = Run(env_id=env_id)
    if shards == 1:
        return [Server(directory / "shard-0", run)]
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "shard.key"
    key.write_text(KEY)
    common = ["--shards", str(shards), "--shard-key-file", str(key)]
    others = [Server(directory / f"shard-{i}", run, [*common, "--shard-index", str(i)]) for i in range(1, shards)]
    addresses = ",".join(["127.0.0.1:0", *(other.address for other in others)])
    return [Server(directory / "shard-0", run, [*common, "--shard-index", "0", "--shard-addresses", addresses]),
            *others]


def print_table(rows: list[Row]) -> None:
    print("| layout | dtype | shards K | N | updates/s | ratio to K = 1 | CPU/update, all shards (ms) | "
          "push p50 / p99 (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    single = {(r.env_id, r.dtype, r.workers): r.updates_per_second for r in rows if r.shards == 1}
    for r in rows:
        base = single.get((r.env_id, r.dtype, r.workers))
        ratio = f"{r.updates_per_second / base:.2f}" if base else "-"
        print(f"| {r.env_id} | {SHORT_DTYPE[r.dtype]} | {r.shards} | {r.workers} | {r.updates_per_second:,.0f} | "
              f"{ratio} | {ms(r.cpu_per_update)} | {ms(percentile(r.round_trips, 50))} / "
              f"{ms(percentile(r.round_trips, 99))} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-ids", nargs="+", default=["ALE/Pong-v5", "CartPole-v1"])
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=sorted(SHORT_DTYPE))
    parser.add_argument("--shards", nargs="+", type=int, default=[1, 2], help="values of K")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4], help="values of N")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of pushing before each window")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of each window")
    args = parser.parse_args(argv)
    CONTEXT.set_forkserver_preload([*PRELOAD, "asyncrl.worker.client"])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="asyncrl-shards-") as temporary:
        for env_id in args.env_ids:
            for shards in args.shards:
                servers = start_server(Path(temporary) / f"{env_id.replace('/', '-')}-K{shards}", env_id, shards)
                try:
                    for dtype in args.dtypes:
                        for workers in args.workers:
                            note(f"{env_id} {dtype} K={shards} N={workers}")
                            rate, cpu, round_trips, _ = measure(
                                pusher, (servers[0].address, dtype), workers, [s.popen.pid for s in servers],
                                args.warmup, args.seconds, lambda: servers[0].status().updates_applied)
                            rows.append(Row(env_id, dtype, shards, workers, rate, cpu, round_trips))
                finally:
                    for server in servers:
                        server.stop()
    print("\n".join(machine()))
    print(f"A3C layouts; each push: gradients and reply weights in the dtype, frames {FRAMES}; windows of "
          f"{args.seconds:g} s after {args.warmup:g} s\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
