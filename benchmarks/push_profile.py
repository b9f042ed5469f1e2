"""Where a push's server time goes: py-spy on a live `asyncrl server` under one synthetic pusher.

Runs benchmarks/capacity.py for one layout, dtype and N (default Pong, fp32, 1 pusher: the case
issue 13 profiled), attaches `py-spy record --native` to its server process for --seconds, and
prints the share of the server's working samples (threads waiting on a lock, a queue or epoll
are left out) in each part of a push, and that share of the run's server CPU per update (as
capacity.py measured it, so with py-spy's own sampling cost in it). The parts are matched by
function names in the stacks, first match wins (PARTS); a renamed function lands in "the rest".

    .venv/bin/python -m pip install py-spy   # once; ptrace rights on the server process are needed
    .venv/bin/python benchmarks/push_profile.py
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (part, a substring of a frame that puts a sample in it); order matters: the first match wins.
PARTS = [
    ("apply: the optimizer step (ParameterStore.apply)", "ParameterStore.apply"),
    ("gradients: decode and the finiteness check", "decode_gradients"),
    ("reply weights: encode, once per version", "FlatLayout.encode"),
    ("copy the encoded weights into the reply", "_push_reply"),
    ("rest of the handler (registry, run lock, stats)", "ParameterServerServicer.PushGradients"),
    ("serialize the reply (protobuf)", "_serialize_response"),
    ("parse the request (protobuf)", "upb_Decode"),
    ("gRPC sending (sendmsg)", "sendmsg"),
    ("gRPC's polling thread: the C core receiving, events dispatched", "_serve ("),
]
WAITING = ("PyThread_acquire_lock_timed", "epoll_wait", "_queue_SimpleQueue_get", "Condition.wait", "Event.wait",
           "pthread_cond_timedwait")
REST = "the rest of gRPC's Python server (thread pool, futures, status)"


def shares(raw: Path) -> tuple[collections.Counter[str], int]:
    """Working samples per part, from py-spy's raw (collapsed stacks) output."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or any(key in stack for key in WAITING):
            continue
        total += int(count)
        part = next((name for name, key in PARTS if key in stack), REST)
        counts[part] += int(count)
    return counts, total


def cpu_per_update(capacity_output: str) -> float:
    """The server CPU per update (ms) of capacity.py's one table row."""
    rows = [line for line in capacity_output.splitlines() if line.startswith("| ") and " fp" in line]
    if len(rows) != 1:
        sys.exit(f"push_profile: expected one row from capacity.py, got {len(rows)}:\n{capacity_output[-2000:]}")
    return float(rows[0].split("|")[7])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="ALE/Pong-v5")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--workers", type=int, default=1, help="synthetic pushers (N)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds py-spy samples")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        sys.exit("push_profile: py-spy not found; install it with: .venv/bin/python -m pip install py-spy")

    with tempfile.TemporaryDirectory(prefix="asyncrl-profile-") as temporary:
        raw = Path(temporary) / "server.raw"
        capacity = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "capacity.py"), "--env-ids", args.env_id, "--dtypes", args.dtype,
             "--workers", str(args.workers), "--warmup", "3", "--seconds", str(args.seconds + 10)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        server = _server_pid(time.monotonic() + 120)
        time.sleep(5)  # registration and the pushers' warm-up
        subprocess.run([py_spy, "record", "--native", "--rate", "100", "--duration", str(int(args.seconds)),
                        "--format", "raw", "--output", str(raw), "--pid", str(server)], check=True,
                       stdout=subprocess.DEVNULL)
        output, _ = capacity.communicate()
        counts, total = shares(raw)
    milliseconds = cpu_per_update(output)
    print(f"{args.env_id} {args.dtype}, N={args.workers}: {total} working samples; server CPU/update "
          f"{milliseconds:.2f} ms (with py-spy sampling)\n")
    print("| part of a push | ms | share |\n|---|---|---|")
    for part, count in counts.most_common():
        print(f"| {part} | {milliseconds * count / total:.2f} | {100 * count / total:.1f}% |")


def _server_pid(deadline: float) -> int:
    """The pid of the `asyncrl server` capacity.py started (this venv's python, `-m asyncrl server`)."""
    pattern = re.escape(sys.executable) + " -m asyncrl server"
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-n", "-f", pattern], capture_output=True, text=True).stdout.split()
        if found:
            return int(found[0])
        time.sleep(0.5)
    sys.exit("push_profile: capacity.py's server did not start within 120 s")


if __name__ == "__main__":
    main()
