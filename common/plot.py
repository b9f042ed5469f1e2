"""Learning curves: the mean return of the last 100 episodes against frames and against wall time, as a PNG."""

from __future__ import annotations

import csv
from pathlib import Path


def plot_run(run_dir: Path) -> Path:
    """Reads RUN_DIR/progress.csv (written by `asyncrl train`) and writes RUN_DIR/learning_curve.png."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    source = run_dir / "progress.csv"
    if not source.exists():
        raise FileNotFoundError(f"{source} not found: is {run_dir} a directory written by `asyncrl train`?")
    rows = [row for row in csv.DictReader(open(source)) if row["mean_return_100"] != ""]  # none before an episode
    frames = [int(row["global_frames"]) for row in rows]
    seconds = [float(row["wall_seconds"]) for row in rows]
    returns = [float(row["mean_return_100"]) for row in rows]
    figure, (by_frames, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    by_frames.plot(frames, returns)
    by_frames.set_xlabel("frames (T)")
    by_frames.set_ylabel("mean return, last 100 episodes")
    by_time.plot(seconds, returns)
    by_time.set_xlabel("wall time (s)")
    for axes in (by_frames, by_time):
        axes.grid(alpha=0.3)
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    target = run_dir / "learning_curve.png"
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
