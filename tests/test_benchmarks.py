"""Smoke tests of the benchmark scripts: each runs its shortest configuration end to end and prints its table.

The figures themselves are the machine's (README, "Benchmark"); these check only that the
scripts still run against today's server and worker code: CartPole, fp32, one pusher, windows
of a second.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import CHILD_ENV, ROOT

SHORT = ["--env-ids", "CartPole-v1", "--dtypes", "float32", "--workers", "1", "--warmup", "0.5", "--seconds", "1"]


def run_benchmark(script: str, *flags: str) -> list[dict[str, str]]:
    """Runs benchmarks/<script> with flags; its markdown table's rows, each by the header's column names."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *flags], cwd=ROOT, env=CHILD_ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(lines) >= 3 and set(lines[1]) <= set("|-"), result.stdout
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_capacity_prints_updates_per_second_beside_the_echo():
    (row,) = run_benchmark("capacity.py", *SHORT)
    assert (row["layout"], row["dtype"], row["N"]) == ("CartPole-v1", "fp32", "1")
    assert number(row["updates/s"]) > 0 and number(row["echo round trips/s"]) > 0
    assert number(row["ratio"]) > 0 and number(row["ratio per core"]) > 0


def test_shards_prints_updates_per_second_for_one_and_two_shards():
    rows = run_benchmark("shards.py", *SHORT, "--shards", "1", "2")
    assert [(row["layout"], row["dtype"], row["shards K"], row["N"]) for row in rows] == [
        ("CartPole-v1", "fp32", "1", "1"), ("CartPole-v1", "fp32", "2", "1")]
    assert all(number(row["updates/s"]) > 0 for row in rows)
    assert rows[0]["ratio to K = 1"] == "1.00" and number(rows[1]["ratio to K = 1"]) > 0
