"""Frames and wall time to a mean return of 475 on CartPole-v1: asyncrl's four methods beside stable-baselines3 A2C.

    .venv/bin/python benchmarks/time_to_target.py [--seeds 3] [--budget 1000000]

asyncrl: `asyncrl train --algo M --workers 2 --envs E --seed S --eval-workers 1 --target-on
eval` (a server, 2 worker processes with 2E env copies in all, E = 8 by default, and one
evaluation worker playing the latest weights greedily), stopped when the evaluation mean
(the last 10 greedy episodes) reaches the target: the paper's scores are of an evaluated
policy, and the value-based methods' training episodes are played with the paper's
exploration (30% of the env copies settle at epsilon 0.5), which keeps their running mean
far below what the network can do. A3C also runs as before, stopped by the mean of its
last 100 training episodes (sampled actions), the same measure as SB3's. Wall time from
launch to the end of training (process start-up included), frames from the final checkpoint.

Baseline: stable-baselines3 A2C with the RL-zoo CartPole-v1 settings (8 envs, MlpPolicy,
ent_coef 0, everything else default), one torch thread, stopped by a callback the moment
the mean of its last 100 episodes reaches the target.

Each cell is the median over --seeds seeds; a run that does not reach the target within
--budget frames counts as the budget (and is marked). Needs `pip install -e .[bench]`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from asyncrl.common import checkpoint  # noqa: E402

TARGET = 475.0
METHODS = ("a3c", "q1", "sarsa1", "nstep-q")
CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_asyncrl(algo: str, seed: int, budget: int, envs: int, evaluated: bool) -> tuple[int, float, float]:
    """(frames, wall seconds, final mean return) of one `asyncrl train` run; with evaluated, the mean is the
    evaluation workers' (and stops the run), else the training episodes'."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{algo}-") as run_dir:
        flags = ["--algo", algo, "--seed", str(seed), "--workers", "2", "--envs", str(envs), "--max-frames", str(budget),
                 "--target-return", str(TARGET), "--run-dir", run_dir, "--progress-interval", "5"]
        if evaluated:
            flags += ["--eval-workers", "1", "--target-on", "eval"]
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "asyncrl", "train", *flags], env=CHILD_ENV, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
        wall = time.perf_counter() - started
        _, state = checkpoint.load_latest(Path(run_dir) / "checkpoints")
        if evaluated:
            with open(Path(run_dir) / "progress.csv") as handle:
                means = [row["eval_mean_return"] for row in csv.DictReader(handle) if row["eval_mean_return"]]
            return state["store"]["global_frames"], wall, float(means[-1]) if means else 0.0
        returns = state["recent_returns"]
        return state["store"]["global_frames"], wall, sum(returns) / max(len(returns), 1)


SB3_SCRIPT = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

seed, budget, target = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

class StopAtTarget(BaseCallback):
    def _on_step(self):
        buffer = self.model.ep_info_buffer
        return not (len(buffer) == 100 and sum(e["r"] for e in buffer) / 100 >= target)

started = time.perf_counter()
env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
model = A2C("MlpPolicy", env, ent_coef=0.0, seed=seed, device="cpu")
model.learn(total_timesteps=budget, callback=StopAtTarget())
buffer = model.ep_info_buffer
print(json.dumps({"frames": model.num_timesteps, "wall": time.perf_counter() - started,
                  "mean": sum(e["r"] for e in buffer) / max(len(buffer), 1)}))
"""


def run_sb3_a2c(seed: int, budget: int) -> tuple[int, float, float]:
    """(frames, wall seconds, final mean return) of one stable-baselines3 A2C run, in its own process."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", SB3_SCRIPT, str(seed), str(budget), str(TARGET)], env=CHILD_ENV,
                            capture_output=True, text=True, check=True, timeout=3600)
    wall = time.perf_counter() - started  # process start-up included, as for asyncrl
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome["frames"], wall, outcome["mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=1_000_000, help="frame budget per run")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated asyncrl methods")
    parser.add_argument("--envs", type=int, default=8, help="env copies per asyncrl worker (default 8)")
    args = parser.parse_args()
    runs: dict[str, list[tuple[int, float, float]]] = {}
    # (row label, method, evaluated): each method to the greedy evaluation mean; A3C and SB3 to their training mean.
    entries = [(f"asyncrl {m} (2 workers x {args.envs} envs), greedy evaluation mean", m, True)
               for m in args.methods.split(",")]
    if "a3c" in args.methods.split(","):
        entries.append((f"asyncrl a3c (2 workers x {args.envs} envs), training mean", "a3c", False))
    entries.append(("stable-baselines3 A2C (8 envs), training mean", "sb3-a2c", False))
    for label, name, evaluated in entries:
        for seed in range(args.seeds):
            outcome = (run_sb3_a2c(seed, args.budget) if name == "sb3-a2c"
                       else run_asyncrl(name, seed, args.budget, args.envs, evaluated))
            runs.setdefault(label, []).append(outcome)
            print(f"{label} seed {seed}: {outcome[0]:,d} frames, {outcome[1]:.1f}s, mean return {outcome[2]:.1f}",
                  file=sys.stderr, flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"\nTime to mean return {TARGET:g} on CartPole-v1, median of {args.seeds} seeds "
          f"({datetime.date.today()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()})\n")
    print("| method, and the mean that stops it | frames | wall time (s) | reached | final mean return |")
    print("|---|---|---|---|---|")
    baseline_wall = statistics.median(wall for _, wall, _ in runs[entries[-1][0]])
    for label, outcomes in runs.items():
        reached = sum(mean >= TARGET for _, _, mean in outcomes)
        frames = statistics.median(f for f, _, _ in outcomes)
        wall = statistics.median(w for _, w, _ in outcomes)
        print(f"| {label} | {frames:,.0f} | {wall:.1f} ({wall / baseline_wall:.2f}x A2C) | {reached}/{len(outcomes)} "
              f"| {statistics.median(m for _, _, m in outcomes):.1f} |")


if __name__ == "__main__":
    main()
