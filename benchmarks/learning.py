"""The learning benchmark: asyncrl on a stated method, env and frame budget, beside stable-baselines3 A2C in the same run.

    .venv/bin/python benchmarks/learning.py --env-id Acrobot-v1 --frames 500000
    .venv/bin/python benchmarks/learning.py --env-id ALE/Pong-v5 --frames 10000000 --sb3-frames 2000000
    .venv/bin/python benchmarks/learning.py --env-id InvertedPendulum-v5 --frames 1000000 -- --eval-workers 1  # mujoco

asyncrl runs as `asyncrl train --env-id ENV --algo ALGO --max-frames FRAMES --seed SEED` and
nothing else: its preset's defaults, layout (workers x env copies) and target return.
stable-baselines3 A2C runs next, in its own process with one torch thread, for
--sb3-frames (default: the same budget): on classic control with 8 envs and ent_coef 0
(everything else its default, as RL-zoo does), on Atari with RL-zoo's Pong settings
(16 envs, AtariWrapper, 4 stacked frames, RMSpropTFLike eps 1e-5, vf_coef 0.25); a Box action
space (Pendulum-v1, MuJoCo's InvertedPendulum-v5) gets the same MlpPolicy set-up, whose Gaussian
has a state-independent log std where asyncrl's variance is a softplus head. Both
record the mean return of their last 100 episodes (once 100 have ended) against frames (Atari: 4 per agent
step) and wall time from process start. With evaluation workers (`-- --eval-workers 1`) asyncrl's
greedy evaluation mean (its last --eval-window episodes, once that many have ended) is a curve and
rows of its own, beside the training means.

Writes under docs/results/NAME/ (NAME: --name, default algo-env): asyncrl.csv, sb3_a2c.csv,
curve.png (mean return against frames and against wall time, both systems) and
summary.md, the table it prints: frames and wall time to each milestone, and asyncrl's
as a ratio to SB3's (below 1: asyncrl got there sooner). --asyncrl-csv takes a finished
`asyncrl train` run's progress.csv instead of training, and --sb3-csv a finished SB3 run's
CSV (this script's SB3_SCRIPT, run by hand: `python -c "$SB3_SCRIPT" ENV FRAMES SEED TARGET OUT`);
the table says so.
Needs `pip install -e .[bench]`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
MILESTONES = {"CartPole-v1": (195.0, 475.0), "Acrobot-v1": (-200.0, -100.0), "ALE/Pong-v5": (-15.0, 0.0, 18.0),
              "Pendulum-v1": (-400.0, -200.0), "InvertedPendulum-v5": (500.0, 950.0, 1000.0),
              "HalfCheetah-v5": (500.0, 1000.0)}

SB3_SCRIPT = r"""
import csv, sys, time
started = time.perf_counter()
import torch
torch.set_num_threads(1)
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback

env_id, frames, seed, target, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
target = None if target == "none" else float(target)
atari = env_id.startswith("ALE/")
frames_per_step = 4 if atari else 1
if atari:
    import ale_py, gymnasium
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    gymnasium.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(env_id, n_envs=16, seed=seed, env_kwargs=dict(
        frameskip=1, repeat_action_probability=0.0, full_action_space=False)), n_stack=4)
    model = A2C("CnnPolicy", env, ent_coef=0.01, vf_coef=0.25, seed=seed, device="cpu",
                policy_kwargs=dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5)))
else:
    from stable_baselines3.common.env_util import make_vec_env
    env = make_vec_env(env_id, n_envs=8, seed=seed)
    model = A2C("MlpPolicy", env, ent_coef=0.0, seed=seed, device="cpu")

class Record(BaseCallback):
    def _on_training_start(self):
        self.file = open(out, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["wall_seconds", "global_frames", "mean_return_100", "episodes_completed"])
        self.episodes = 0
        self.next_row = 0.0
    def _on_step(self):
        buffer = self.model.ep_info_buffer
        self.episodes += sum("episode" in info for info in self.locals["infos"])
        mean = sum(e["r"] for e in buffer) / len(buffer) if buffer else None
        now = time.perf_counter() - started
        done = target is not None and len(buffer) == 100 and mean >= target
        if mean is not None and (now >= self.next_row or done):
            self.writer.writerow([round(now, 2), self.model.num_timesteps * frames_per_step, mean, self.episodes])
            self.file.flush()
            self.next_row = now + 2.0
        return not done
    def _on_training_end(self):
        self.file.close()

model.learn(total_timesteps=frames // frames_per_step, callback=Record())
"""


def run_asyncrl(args: argparse.Namespace, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as run_dir:
        command = [sys.executable, "-m", "asyncrl", "train", "--env-id", args.env_id, "--algo", args.algo,
                   "--max-frames", str(args.frames), "--seed", str(args.seed), "--run-dir", run_dir, *args.asyncrl_flags]
        print("$", " ".join(command[2:]), file=sys.stderr, flush=True)
        subprocess.run(command, env=CHILD_ENV, check=True, stdout=sys.stderr)
        shutil.copy(Path(run_dir) / "progress.csv", out)


def run_sb3(args: argparse.Namespace, out: Path) -> None:
    target = str(MILESTONES.get(args.env_id, ("none",))[-1])
    print(f"$ stable-baselines3 A2C on {args.env_id}, {args.sb3_frames:,d} frames", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", SB3_SCRIPT, args.env_id, str(args.sb3_frames), str(args.seed), target,
                    str(out)], env=CHILD_ENV, check=True)


def read_curve(path: Path) -> list[tuple[float, int, float]]:
    """(wall seconds, frames, mean return) rows once 100 episodes have ended: before that the mean is of the
    episodes that ended first, which on Acrobot are the short, successful ones."""
    with open(path) as file:
        return [(float(row["wall_seconds"]), int(row["global_frames"]), float(row["mean_return_100"]))
                for row in csv.DictReader(file)
                if row["mean_return_100"] not in ("", None) and int(row["episodes_completed"]) >= 100]


def read_eval_curve(path: Path, window: int) -> list[tuple[float, int, float]]:
    """(wall seconds, frames, evaluation mean return) rows of an asyncrl run with evaluation workers, once window
    evaluation episodes have ended; empty for a run without them."""
    with open(path) as file:
        return [(float(row["wall_seconds"]), int(row["global_frames"]), float(row["eval_mean_return"]))
                for row in csv.DictReader(file)
                if row.get("eval_mean_return") not in ("", None) and int(row["eval_episodes_completed"]) >= window]


def first_reach(curve: list[tuple[float, int, float]], milestone: float) -> tuple[int, float] | None:
    """(frames, wall seconds) of the first row at or above milestone."""
    return next(((frames, wall) for wall, frames, mean in curve if mean >= milestone), None)


def plot(curves: dict[str, list[tuple[float, int, float]]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_frames, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, curve in curves.items():
        by_frames.plot([f for _, f, _ in curve], [m for _, _, m in curve], label=label)
        by_time.plot([w / 60 for w, _, _ in curve], [m for _, _, m in curve], label=label)
    by_frames.set_xlabel("frames")
    by_frames.set_ylabel("mean return (training: last 100 episodes)")
    by_time.set_xlabel("wall time (minutes)")
    for axes in (by_frames, by_time):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def summary(args: argparse.Namespace, curves: dict[str, list[tuple[float, int, float]]], note: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    milestones = MILESTONES.get(args.env_id) or (max(m for c in curves.values() for _, _, m in c),)
    lines = [f"{args.algo} on {args.env_id}: asyncrl budget {args.frames:,d} frames, SB3 A2C {args.sb3_frames:,d} "
             f"({datetime.date.today()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}){note}", "",
             "| system | milestone | frames | wall time | ratio to SB3 (frames, time) |", "|---|---|---|---|---|"]
    baseline = curves.get("sb3 a2c", [])
    for label, curve in curves.items():
        for milestone in milestones:
            reached, reference = first_reach(curve, milestone), first_reach(baseline, milestone)
            if reached is None:
                final = f"not reached (last {curve[-1][2]:.1f} at {curve[-1][1]:,d})" if curve else "no episodes"
                lines.append(f"| {label} | {milestone:g} | {final} | | |")
                continue
            ratio = (f"{reached[0] / reference[0]:.2f}x, {reached[1] / reference[1]:.2f}x"
                     if reference is not None and label != "sb3 a2c" else "")
            lines.append(f"| {label} | {milestone:g} | {reached[0]:,d} | {reached[1] / 60:.1f} min | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="Acrobot-v1")
    parser.add_argument("--algo", default="a3c")
    parser.add_argument("--frames", type=int, default=500_000, help="asyncrl's frame budget")
    parser.add_argument("--sb3-frames", type=int, default=None, help="SB3 A2C's frame budget (default --frames; "
                        "0 skips it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="results folder under docs/results/ (default ALGO-ENV)")
    parser.add_argument("--asyncrl-csv", type=Path, default=None, help="a finished run's progress.csv instead "
                        "of training asyncrl")
    parser.add_argument("--sb3-csv", type=Path, default=None, help="a finished SB3 A2C run's CSV instead of "
                        "training SB3")
    parser.add_argument("--eval-window", type=int, default=10, help="the run's --eval-window, where asyncrl_flags "
                        "add evaluation workers")
    parser.add_argument("asyncrl_flags", nargs="*", help="more `asyncrl train` flags, after --")
    args = parser.parse_args()
    args.sb3_frames = args.frames if args.sb3_frames is None else args.sb3_frames
    name = args.name or f"{args.algo}-{args.env_id.split('/')[-1].lower()}"
    out = ROOT / "docs" / "results" / name
    out.mkdir(parents=True, exist_ok=True)
    note = ""
    if args.asyncrl_csv is not None:
        shutil.copy(args.asyncrl_csv, out / "asyncrl.csv")
        note = f"; asyncrl from an earlier `asyncrl train` run ({args.asyncrl_csv.name})"
    else:
        run_asyncrl(args, out / "asyncrl.csv")
    curves = {"asyncrl " + args.algo: read_curve(out / "asyncrl.csv")}
    evaluation = read_eval_curve(out / "asyncrl.csv", args.eval_window)
    if evaluation:
        curves[f"asyncrl {args.algo}, greedy evaluation (last {args.eval_window})"] = evaluation
    if args.sb3_csv is not None:
        shutil.copy(args.sb3_csv, out / "sb3_a2c.csv")
        note += f"; SB3 A2C from an earlier run ({args.sb3_csv.name})"
    elif args.sb3_frames > 0:
        run_sb3(args, out / "sb3_a2c.csv")
    if (out / "sb3_a2c.csv").exists() and (args.sb3_csv is not None or args.sb3_frames > 0):
        curves["sb3 a2c"] = read_curve(out / "sb3_a2c.csv")
    plot(curves, f"{args.algo} on {args.env_id}", out / "curve.png")
    table = summary(args, curves, note)
    (out / "summary.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
