"""How many updates one `asyncrl server` process applies, beside a raw gRPC echo of the same payloads.

    .venv/bin/python benchmarks/capacity.py [--seconds 10] [--workers 1 2 4 [8]]
        [--env-ids CartPole-v1 ALE/Pong-v5] [--dtypes float32 float16]

Why: one server process is the ceiling on how many workers a run can feed (issue 13). This
measures that ceiling without envs or models in the way, and puts it beside what Python gRPC
itself allows for the same bytes, so the gap is the server's own cost.

For each env's layout (CartPole-v1: the A3C MLP; ALE/Pong-v5: the paper's conv net, 2.7 MB in
fp32), each wire dtype and each N in --workers:

1. the server: a real `asyncrl server` on 127.0.0.1 (one per env, reused across dtypes and N)
   and N pusher processes. Each registers, takes the layout from its RegisterWorkerResponse,
   encodes random gradients once with asyncrl.common.tensors in the dtype, and pushes them as
   fast as it can (frames 5, its secret, sequence number last + 1, base version from the last
   reply, the reply's weights asked for in the dtype, as a real worker does); an ABORTED (stale)
   push re-pulls the version and goes on. Over --seconds after --warmup: updates/s from
   GetStatus updates_applied, MB/s (request + reply bytes per update), server CPU per update
   from /proc utime + stime, and push round-trip p50/p99 at the pushers;
2. the echo: a raw gRPC Python server in its own process (a generic unary-unary handler on
   bytes, no protobuf, the same 16 threads and message limits as the server) and N client
   processes sending payloads of the push request's size and receiving one of the reply's
   size: round trips/s and server CPU per round trip over the same window.

Ratios: updates/s over echo round trips/s, and per core used (updates per server CPU-second
over round trips per echo-server CPU-second); the goal in issue 13 is >= 0.9. Progress goes
to stderr, the machine and a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import grpc
import torch

from bench import Run, Server, _tree_cpu_seconds, machine, note, percentile  # benchmarks/ is on sys.path
from asyncrl.common import tensors
from asyncrl.server.app import message_options
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc

FRAMES = 5  # within the bound for one env copy of either layout (2 x 5 steps x 1 or 4 frames per step)
MAX_MESSAGE_BYTES = 64 * 2**20
ECHO_METHOD = "/capacity.Echo/Call"
SHORT_DTYPE = {"float32": "fp32", "float16": "fp16"}
# Clients and the echo server fork from a server process that has loaded torch and gRPC once (no channels),
# so that starting 4 of them takes milliseconds rather than seconds of imports each on a small machine.
CONTEXT = multiprocessing.get_context("forkserver")
PRELOAD = ["torch", "grpc", "bench", "asyncrl.common.tensors", "asyncrl.v1.parameter_server_pb2_grpc"]


@dataclass
class Window:
    """What one configuration measured: rates over the window and the pushers' round trips in it."""

    rate: float  # updates/s or round trips/s at the server
    cpu_per_call: float  # server CPU seconds per update or round trip
    round_trips: list[float]
    request_bytes: int
    reply_bytes: int


@dataclass(frozen=True)
class Config:
    env_id: str
    dtype: str
    workers: int


# --- the clients (each in its own process) --------------------------------------------------------


def run_loop(call: Callable[[], object], start: Event, stop: Event, results: Connection) -> None:
    """Once start is set, calls call until stop is set; then sends each call's (start, end) on the monotonic clock."""
    start.wait()
    calls: list[tuple[float, float]] = []
    while not stop.is_set():
        began = time.monotonic()
        call()
        calls.append((began, time.monotonic()))
    results.send(calls)


def pusher(address: str, dtype: str, ready: Connection, start: Event, stop: Event) -> None:
    """A synthetic worker: registers, then pushes the same precomputed gradients as fast as it can."""
    wire_dtype = tensors.WIRE_DTYPES[dtype]
    with grpc.insecure_channel(address, options=message_options(MAX_MESSAGE_BYTES)) as channel:
        stub = pb_grpc.ParameterServerServiceStub(channel)
        registration = stub.RegisterWorker(pb.RegisterWorkerRequest(name="capacity", num_envs=1), timeout=30)
        layout = tensors.FlatLayout(registration.config.model.layout)
        request = pb.PushGradientsRequest(
            worker_id=registration.worker_id, worker_secret=registration.worker_secret, frames=FRAMES,
            gradients=layout.encode(0.01 * torch.randn(layout.total), wire_dtype), reply_weights_dtype=wire_dtype)
        pull = pb.PullWeightsRequest(worker_id=registration.worker_id, have_version=-1, dtype=wire_dtype,
                                     worker_secret=registration.worker_secret)
        request.base_version = stub.PullWeights(pull, timeout=30).version
        while (first := push_once(stub, request, pull)) is None:  # stale only if others pushed 32 meanwhile
            pass
        ready.send((request.ByteSize(), first.ByteSize()))
        run_loop(lambda: push_once(stub, request, pull), start, stop, ready)


def push_once(stub: pb_grpc.ParameterServerServiceStub, request: pb.PushGradientsRequest,
              pull: pb.PullWeightsRequest) -> pb.PushGradientsResponse | None:
    """One push with the next sequence number; readies request for the next; None when it was stale."""
    request.sequence_number += 1
    try:
        reply = stub.PushGradients(request, timeout=30)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ABORTED:
            raise
        request.sequence_number -= 1  # a refused push does not count
        request.base_version = stub.PullWeights(pull, timeout=30).version
        return None
    request.base_version = reply.version
    return reply


def echo_client(address: str, request_bytes: int, ready: Connection, start: Event, stop: Event) -> None:
    """Sends request_bytes to the echo server as fast as it can."""
    with grpc.insecure_channel(address, options=message_options(MAX_MESSAGE_BYTES)) as channel:
        echo = channel.unary_unary(ECHO_METHOD)
        payload = bytes(request_bytes)
        echo(payload, timeout=30)
        ready.send(None)
        run_loop(lambda: echo(payload, timeout=30), start, stop, ready)


# --- the echo server (its own process) ------------------------------------------------------------


def echo_server(reply_bytes: int, port: Connection) -> None:
    """Answers every call with reply_bytes zero bytes, the request left undecoded; sends its port, serves forever."""
    reply = bytes(reply_bytes)
    handler = grpc.method_handlers_generic_handler(
        "capacity.Echo", {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: reply)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=message_options(MAX_MESSAGE_BYTES))
    server.add_generic_rpc_handlers((handler,))
    port.send(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


# --- measuring --------------------------------------------------------------------------------------


def measure(target: Callable[..., None], args: tuple, workers: int, server_pids: Sequence[int], warmup: float,
            seconds: float, count: Callable[[], int] | None = None) -> tuple[float, float, list[float], list]:
    """Starts the clients and times a window after warmup: (calls/s, server CPU per call, round trips, what each
    client said when ready). The server's CPU is that of every process in server_pids (the shards of a sharded
    server). Calls are counted by count (the server's own counter) or, without it, as the
    clients' calls that ended in the window; round trips are those of the calls that began in it."""
    start, stop = CONTEXT.Event(), CONTEXT.Event()
    pipes = [CONTEXT.Pipe(duplex=False) for _ in range(workers)]
    processes = [CONTEXT.Process(target=target, args=(*args, sender, start, stop), daemon=True)
                 for _, sender in pipes]
    for process in processes:
        process.start()
    try:
        said = [receiver.recv() for receiver, _ in pipes]
        start.set()
        time.sleep(warmup)
        counted, cpu, began = count() if count else 0, server_cpu(server_pids), time.monotonic()
        time.sleep(seconds)
        counted, cpu, ended = (count() - counted if count else 0), server_cpu(server_pids) - cpu, time.monotonic()
        stop.set()
        calls = [call for receiver, _ in pipes for call in receiver.recv()]
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    if count is None:
        counted = sum(began <= end < ended for _, end in calls)
    round_trips = [end - start for start, end in calls if began <= start < ended]
    return counted / (ended - began), cpu / max(counted, 1), round_trips, said


def measure_server(server: Server, config: Config, warmup: float, seconds: float) -> Window:
    """N pushers against server, counted by its updates_applied."""
    rate, cpu, round_trips, sizes = measure(pusher, (server.address, config.dtype), config.workers,
                                            [server.popen.pid], warmup, seconds, lambda: server.status().updates_applied)
    return Window(rate, cpu, round_trips, *sizes[0])


def measure_echo(config: Config, request_bytes: int, reply_bytes: int, warmup: float, seconds: float) -> Window:
    """N echo clients against a fresh echo server in its own process."""
    receiver, sender = CONTEXT.Pipe(duplex=False)
    process = CONTEXT.Process(target=echo_server, args=(reply_bytes, sender), daemon=True)
    process.start()
    try:
        address = f"127.0.0.1:{receiver.recv()}"
        rate, cpu, round_trips, _ = measure(echo_client, (address, request_bytes), config.workers, [process.pid],
                                            warmup, seconds)
    finally:
        process.kill()
        process.join()
    return Window(rate, cpu, round_trips, request_bytes, reply_bytes)


def server_cpu(pids: Sequence[int]) -> float:
    return sum(_tree_cpu_seconds(pid) for pid in pids)


# --- report ------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.2f}"


def print_table(results: list[tuple[Config, Window, Window]]) -> None:
    print("| layout | dtype | N | push / reply (KB) | updates/s | MB/s | server CPU/update (ms) | push p50 / p99 (ms) "
          "| echo round trips/s | echo CPU/rt (ms) | echo p50 / p99 (ms) | ratio | ratio per core |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for config, server, echo in results:
        megabytes = server.rate * (server.request_bytes + server.reply_bytes) / 1e6
        print(f"| {config.env_id} | {SHORT_DTYPE[config.dtype]} | {config.workers} | "
              f"{server.request_bytes / 1e3:,.1f} / {server.reply_bytes / 1e3:,.1f} | {server.rate:,.0f} | "
              f"{megabytes:,.1f} | {ms(server.cpu_per_call)} | {ms(percentile(server.round_trips, 50))} / "
              f"{ms(percentile(server.round_trips, 99))} | {echo.rate:,.0f} | {ms(echo.cpu_per_call)} | "
              f"{ms(percentile(echo.round_trips, 50))} / {ms(percentile(echo.round_trips, 99))} | "
              f"{server.rate / echo.rate:.2f} | {echo.cpu_per_call / server.cpu_per_call:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-ids", nargs="+", default=["CartPole-v1", "ALE/Pong-v5"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=sorted(SHORT_DTYPE))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4, 8], help="values of N")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of pushing before each window")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of each window")
    args = parser.parse_args(argv)
    CONTEXT.set_forkserver_preload(PRELOAD)
    results: list[tuple[Config, Window, Window]] = []
    with tempfile.TemporaryDirectory(prefix="asyncrl-capacity-") as temporary:
        for index, env_id in enumerate(args.env_ids):
            server = Server(Path(temporary) / f"server-{index}", Run(env_id=env_id))
            try:
                for dtype in args.dtypes:
                    for workers in args.workers:
                        config = Config(env_id, dtype, workers)
                        note(f"{env_id} {dtype} N={workers}: server")
                        measured = measure_server(server, config, args.warmup, args.seconds)
                        note(f"{env_id} {dtype} N={workers}: echo")
                        echo = measure_echo(config, measured.request_bytes, measured.reply_bytes, args.warmup,
                                            args.seconds)
                        results.append((config, measured, echo))
            finally:
                server.stop()
    print("\n".join(machine()))
    print(f"A3C layouts; each push: gradients and reply weights in the dtype, frames {FRAMES}; windows of "
          f"{args.seconds:g} s after {args.warmup:g} s; MB/s counts request + reply bytes\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
