"""`asyncrl train`: separate processes, progress, CSV, final checkpoint, and a clean Ctrl-C."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import CHILD_ENV

from asyncrl.common import checkpoint


def children_of(pid: int) -> set[int]:
    """Every live descendant of pid, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def frames_logged(csv_path: Path) -> bool:
    """Whether the launcher's CSV shows frames pushed by the workers."""
    if not csv_path.exists():
        return False
    return any(int(row["global_frames"]) > 0 for row in csv.DictReader(open(csv_path)))


def start_train(run_dir: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "asyncrl", "train", "--run-dir", str(run_dir), "--progress-interval", "0.5", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=CHILD_ENV, start_new_session=True,
    )


def test_train_runs_to_its_frame_budget_and_reports(tmp_path: Path):
    """With a small budget: server and 2 workers as processes, progress lines, CSV, checkpoint, summary.

    The run dir holds an earlier run's checkpoint (of a higher version): it is moved aside, so this run's
    checkpoints are neither pruned as older nor mistaken for it."""
    earlier = checkpoint.checkpoint_path(tmp_path / "checkpoints", 10**9)
    earlier.parent.mkdir()
    earlier.write_bytes(b"an earlier run")
    train = start_train(tmp_path, "--max-frames", "6000", "--target-return", "none", "--workers", "2")
    output, _ = train.communicate(timeout=180)
    assert train.returncode == 0, output
    assert "T=" in output and "fps=" in output and "mean_return_100=" in output
    assert "finished after" in output and "final checkpoint" in output
    assert "held an earlier run's checkpoints; moved them to" in output
    assert (tmp_path / "previous-checkpoints" / earlier.name).read_bytes() == b"an earlier run"
    rows = list(csv.DictReader(open(tmp_path / "progress.csv")))
    assert rows and set(rows[0]) >= {"global_frames", "frames_per_second", "mean_return_100"}
    path, state = checkpoint.load_latest(tmp_path / "checkpoints")
    assert str(path) in output
    assert state["store"]["global_frames"] >= 6000 and state["training_done"]
    assert (tmp_path / "worker-0.log").exists() and (tmp_path / "worker-1.log").exists()


def test_ctrl_c_stops_everything_with_a_final_checkpoint(tmp_path: Path):
    """SIGINT to the launcher's process group (what a terminal's Ctrl-C sends) leaves no process behind."""
    train = start_train(tmp_path, "--max-frames", "10000000", "--target-return", "none")
    deadline = time.monotonic() + 120
    while not frames_logged(tmp_path / "progress.csv"):
        assert time.monotonic() < deadline and train.poll() is None, "train never made progress"
        time.sleep(0.2)
    descendants = children_of(train.pid)
    assert len(descendants) >= 3, "expected a server and two workers"
    os.killpg(train.pid, signal.SIGINT)
    output, _ = train.communicate(timeout=60)
    assert train.returncode == 130, output
    assert "interrupted" in output
    for pid in descendants:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text(), f"{pid} left running"
    _, state = checkpoint.load_latest(tmp_path / "checkpoints")
    assert state["store"]["global_frames"] > 0
