"""Fault tolerance: killed workers, server restarts with --resume, signals, checkpoints, and the end of a run.

Every server and worker here is a real process on 127.0.0.1. Nothing waits a fixed time for
something to happen: each test polls for the state it needs, with generous deadlines, since
the machines these run on are small and shared.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import torch

from asyncrl.common import checkpoint
from asyncrl.v1 import parameter_server_pb2 as pb

from conftest import CHILD_ENV, Process, register

T = TypeVar("T")

# Generous: two cores shared with other test runs.
DEADLINE = 120.0
# A run far longer than any test, for tests that stop the server themselves.
ENDLESS = ("--max-frames", "100000000", "--target-return", "none")


def wait_for(predicate: Callable[[], T], what: str, timeout: float = DEADLINE, interval: float = 0.1,
             processes: tuple[Process, ...] = ()) -> T:
    """Polls predicate until it returns something truthy.

    Fails naming `what`, with the processes' logs, on timeout or as soon as one of processes exits.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        exited = [p for p in processes if p.popen.poll() is not None]
        if exited or time.monotonic() > deadline:
            logs = "\n".join(f"--- {' '.join(p.args)} (exit code {p.popen.poll()})\n{p.log()[-2500:]}"
                             for p in processes)
            why = f"{len(exited)} process(es) exited" if exited else f"timed out after {timeout}s"
            raise AssertionError(f"{why} waiting for {what}\n{logs}")
        time.sleep(interval)


def free_port() -> int:
    """A port nothing listens on right now (the OS's pick), so a server can be started, stopped and restarted on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def by_name(status: pb.GetStatusResponse) -> dict[str, pb.WorkerStatus]:
    return {w.name: w for w in status.workers}


def assert_running(*processes: Process) -> None:
    for process in processes:
        assert process.popen.poll() is None, (
            f"`asyncrl {' '.join(process.args)}` exited with {process.popen.returncode}:\n{process.log()[-3000:]}"
        )


# --- 1. a worker killed mid-run -----------------------------------------------------------


def test_sigkilled_worker_is_reported_dead_and_the_run_finishes_without_it(server_factory, worker_factory):
    """After SIGKILL of one worker the server keeps serving, reports it dead, and the other worker finishes the run and exits 0."""
    max_frames = 40_000
    # The survivor must still be training when the silence is noticed: with one env copy and t_max 5 (5 frames a
    # push) it spends the budget in 10-20 s on an idle 2-core machine, and a silence of 1 s marks the killed one dead.
    server = server_factory("--max-frames", str(max_frames), "--target-return", "none", "--seed", "1",
                            "--silence-timeout", "1", "--linger", "3")
    doomed = worker_factory(server.address, "doomed", "--envs", "1")
    survivor = worker_factory(server.address, "survivor", "--envs", "1")
    everyone = (server, doomed, survivor)

    def both_pushed():
        workers = by_name(server.status())
        return all(name in workers and workers[name].pushes_applied > 0 for name in ("doomed", "survivor"))

    wait_for(both_pushed, "both workers to push", processes=everyone)
    doomed.signal(signal.SIGKILL)
    assert doomed.wait(timeout=30) == -signal.SIGKILL
    killed_at = server.status()
    assert not killed_at.training_done, "the run ended before the kill: the test proves nothing"

    # The server notices the silence, and keeps going with the survivor alone.
    def doomed_reported_dead():
        status = server.status()
        workers = by_name(status)
        return status if not workers["doomed"].alive and workers["survivor"].alive else None

    dead_at = wait_for(doomed_reported_dead, "the killed worker to be reported dead", processes=(server, survivor))
    assert dead_at.live_workers == 1
    assert by_name(dead_at)["doomed"].seconds_since_last_seen > 1
    assert by_name(dead_at)["doomed"].pushes_applied == by_name(killed_at)["doomed"].pushes_applied
    assert not dead_at.training_done, "the run ended before the kill was noticed: the test proves nothing"
    wait_for(lambda: server.status().version > dead_at.version + 10, "the version to rise after the kill",
             processes=(server, survivor))

    # The survivor finishes the run alone, is told so, and exits by itself; then the server does too.
    assert survivor.wait(timeout=DEADLINE) == 0, survivor.log()[-3000:]
    assert "training is over" in survivor.log()
    assert server.wait(timeout=DEADLINE) == 0, server.log()[-3000:]
    _, state = checkpoint.load_latest(server.checkpoint_dir)
    assert state["training_done"] and state["store"]["global_frames"] >= max_frames


# --- 2. the server stopped with SIGTERM and restarted with --resume ------------------------


def test_sigterm_then_resume_keeps_t_and_version_and_the_same_workers_reconnect(server_factory, worker_factory, tmp_path):
    """A SIGTERMed server exits 0 with a checkpoint; resumed on the same port it has T and version intact, and the
    running workers re-register by themselves (in either order: worker ids are not reused) and keep training."""
    port = free_port()
    directory = tmp_path / "server"
    flags = ("--port", str(port), *ENDLESS, "--seed", "2", "--shutdown-grace", "1", "--checkpoint-interval", "0")
    first = server_factory(*flags, directory=directory)
    assert first.port == port
    workers = [worker_factory(first.address, name, "--envs", "1", "--max-backoff", "1") for name in ("w0", "w1")]

    def trained_a_little():
        status = first.status()
        named = by_name(status)
        return status if status.global_frames > 1000 and all(
            w in named and named[w].pushes_applied > 0 for w in ("w0", "w1")) else None

    before = wait_for(trained_a_little, "T > 1000 with both workers pushing", processes=(first, *workers))
    old_ids = {w.name: w.worker_id for w in before.workers}
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, first.log()[-3000:]
    restored = checkpoint.load_latest(first.checkpoint_dir)
    assert restored is not None, f"no checkpoint in {first.checkpoint_dir}"
    path, state = restored
    frames, version = state["store"]["global_frames"], state["store"]["version"]
    assert frames >= before.global_frames and version >= before.version
    assert f"stopped at T={frames}, version {version}" in first.log()

    # Both workers notice the server is gone, and keep retrying rather than exit.
    def retrying(worker: Process) -> bool:
        return worker.log().count("UNAVAILABLE") >= 2

    for worker in workers:
        wait_for(lambda: retrying(worker), f"{worker.args} to retry", processes=(worker,))
    assert_running(*workers)

    # Hold the workers still while the server comes back, so that its first status is the checkpoint's.
    for worker in workers:
        worker.signal(signal.SIGSTOP)
    try:
        second = server_factory(*flags, "--resume", directory=directory)
        assert second.port == port
        resumed = second.status()
        assert (resumed.global_frames, resumed.version) == (frames, version)
        assert "resuming from" in second.log() and str(path.name) in second.log()
        assert len(resumed.workers) == 0
        # Let the worker that registered last the first time come back first: with worker ids counted from 1
        # again it would get the other's old id, and that other's retried calls would land on its record.
        last_name = max(old_ids, key=old_ids.__getitem__)
        last = workers[("w0", "w1").index(last_name)]
        last.signal(signal.SIGCONT)
        wait_for(lambda: last_name in (named := by_name(second.status())) and named[last_name].pushes_applied > 2,
                 f"{last_name} to re-register and push", processes=(second, *workers))
    finally:
        for worker in workers:
            worker.signal(signal.SIGCONT)

    def both_back():
        status = second.status()
        named = by_name(status)
        return status if all(w in named and named[w].pushes_applied > 10 for w in ("w0", "w1")) else None

    after = wait_for(both_back, "both workers to re-register and push to the resumed server",
                     processes=(second, *workers))
    assert after.version > version and after.global_frames > frames
    assert len(after.workers) == 2, [(w.worker_id, w.name) for w in after.workers]
    assert not {w.worker_id for w in after.workers} & set(old_ids.values()), (old_ids, list(after.workers))
    assert_running(*workers)
    for worker in workers:
        assert "registering again" in worker.log()
        assert "Traceback" not in worker.log()
    assert "bad_sequence" not in second.log(), second.log()[-3000:]


def test_a_new_run_refuses_a_directory_with_an_earlier_runs_checkpoints(tmp_path):
    """Without --resume, earlier checkpoints (of higher versions) would outrank the new run's and prune them:
    the server stops with one line, before serving, and leaves them as they were."""
    earlier = checkpoint.checkpoint_path(tmp_path, 123)
    earlier.write_bytes(b"an earlier run")
    result = subprocess.run([sys.executable, "-m", "asyncrl", "server", "--port", "0", "--checkpoint-dir",
                             str(tmp_path)], env=CHILD_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"asyncrl server: error: --checkpoint-dir {tmp_path} holds checkpoints of an earlier run (newest "
        f"{earlier.name}): pass --resume to continue it, or give an empty directory"]
    assert earlier.read_bytes() == b"an earlier run"


def test_ids_given_out_after_the_newest_checkpoint_are_not_reused_after_sigkill(server_factory, tmp_path):
    """A server killed outright leaves a checkpoint older than its last registrations; resumed, it starts after them."""
    directory = tmp_path / "server"
    flags = (*ENDLESS, "--checkpoint-interval", "0", "--shutdown-grace", "1")
    first = server_factory(*flags, directory=directory)
    assert register(first.stub, "a").worker_id == 1
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=DEADLINE) == 0  # its final checkpoint says: next id 2
    second = server_factory(*flags, "--resume", directory=directory)
    assert [register(second.stub, name).worker_id for name in ("b", "c")] == [2, 3]
    second.signal(signal.SIGKILL)
    assert second.wait(timeout=DEADLINE) == -signal.SIGKILL  # no checkpoint after b and c
    _, state = checkpoint.load_latest(directory / "checkpoints")
    assert state["next_worker_id"] == 2
    third = server_factory(*flags, "--resume", directory=directory)
    assert register(third.stub, "d").worker_id == 4


# --- 3. SIGINT ----------------------------------------------------------------------------


def test_sigint_exits_zero_with_a_final_checkpoint(server_factory, worker_factory):
    """SIGINT, like SIGTERM, stops the server cleanly: exit 0, and a final checkpoint of the state it stopped in."""
    server = server_factory(*ENDLESS, "--checkpoint-interval", "0", "--shutdown-grace", "1")
    worker = worker_factory(server.address, "w", "--envs", "1")
    seen = wait_for(lambda: (s := server.status()).version > 20 and s, "some updates", processes=(server, worker))
    assert list(checkpoint.list_checkpoints(server.checkpoint_dir)) == [], "periodic checkpoints were disabled"
    server.signal(signal.SIGINT)
    assert server.wait(timeout=60) == 0, server.log()[-3000:]
    log = server.log()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    restored = checkpoint.load_latest(server.checkpoint_dir)
    assert restored is not None, log[-3000:]
    _, state = restored
    assert state["store"]["version"] >= seen.version and state["store"]["global_frames"] >= seen.global_frames
    assert not state["training_done"]
    stopped = re.findall(r"stopped at T=(\d+), version (\d+)", log)
    assert stopped == [(str(state["store"]["global_frames"]), str(state["store"]["version"]))]
    assert_running(worker)  # the worker outlives the server, retrying


# --- 4. checkpoint files ------------------------------------------------------------------


def _state(version: int) -> dict:
    return {"store": {"version": version, "global_frames": 10 * version, "parameters": {"w": torch.full((3,), float(version))}}}


def test_checkpoint_save_is_atomic_and_keeps_the_newest_k(tmp_path):
    """save leaves only finished checkpoint files (no temp files), prunes to the newest K, and load_latest returns the newest."""
    directory = tmp_path / "nested" / "checkpoints"
    assert checkpoint.load_latest(directory) is None
    for version in (5, 9, 10, 100, 1000):
        written = checkpoint.save(directory, version, _state(version), keep=3)
        assert written == checkpoint.checkpoint_path(directory, version) and written.is_file()
    assert sorted(p.name for p in directory.iterdir()) == [
        "checkpoint-000000000010.pt", "checkpoint-000000000100.pt", "checkpoint-000000001000.pt"]
    path, state = checkpoint.load_latest(directory)
    assert path.name == "checkpoint-000000001000.pt"
    assert state["store"]["version"] == 1000 and state["store"]["global_frames"] == 10_000
    assert torch.equal(state["store"]["parameters"]["w"], torch.full((3,), 1000.0))
    # Saving the same version again replaces the file in place.
    checkpoint.save(directory, 1000, _state(7), keep=3)
    assert len(list(directory.iterdir())) == 3
    assert checkpoint.load_latest(directory)[1]["store"]["global_frames"] == 70


def test_checkpoint_save_that_fails_leaves_nothing_behind(tmp_path, monkeypatch):
    """A save that fails midway leaves neither a temp file nor a partial checkpoint, and older checkpoints survive."""
    directory = tmp_path / "checkpoints"
    checkpoint.save(directory, 1, _state(1), keep=3)

    def broken_fsync(descriptor: int) -> None:  # the temp file holds the bytes written so far
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(directory, 2, _state(2), keep=3)
    assert [p.name for p in directory.iterdir()] == ["checkpoint-000000000001.pt"]
    assert checkpoint.load_latest(directory)[1]["store"]["version"] == 1


def test_checkpoint_listing_ignores_temp_and_foreign_files(tmp_path):
    """Temp files of an interrupted save and unrelated files are never taken for checkpoints, nor pruned."""
    directory = tmp_path / "checkpoints"
    checkpoint.save(directory, 3, _state(3), keep=1)
    (directory / ".checkpoint-abc.tmp").write_bytes(b"partial")
    (directory / "checkpoint-000000000099.pt.bak").write_bytes(b"x")
    (directory / "notes.txt").write_text("x")
    checkpoint.save(directory, 4, _state(4), keep=1)
    assert [p.name for p in checkpoint.list_checkpoints(directory)] == ["checkpoint-000000000004.pt"]
    assert (directory / "notes.txt").exists() and (directory / ".checkpoint-abc.tmp").exists()
    assert checkpoint.load_latest(directory)[1]["store"]["version"] == 4


class _NotAWeight:
    def __reduce__(self):
        return (os.getcwd, ())


def test_checkpoint_load_refuses_arbitrary_pickles(tmp_path):
    """Loading uses weights_only: a file that would call arbitrary code when unpickled is refused."""
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    path = checkpoint.checkpoint_path(directory, 1)
    torch.save({"store": {"version": 1}, "payload": _NotAWeight()}, path)  # the first format: a bare torch.save
    with pytest.raises(checkpoint.CheckpointError) as raised:
        checkpoint.load(path)
    assert isinstance(raised.value.__cause__, pickle.UnpicklingError)
    with pytest.raises(checkpoint.NoUsableCheckpoint):
        checkpoint.load_latest(directory)


# --- 5. a worker started before its server ------------------------------------------------


def test_worker_started_before_the_server_waits_for_it(server_factory, worker_factory, tmp_path):
    """A worker with no server at its address keeps retrying, then joins once one starts there and exits 0 when the run ends."""
    port = free_port()
    worker = worker_factory(f"127.0.0.1:{port}", "early", "--envs", "1", "--max-backoff", "1")
    wait_for(lambda: worker.log().count("UNAVAILABLE") >= 3, "the worker to retry a few times", processes=(worker,))
    assert_running(worker)
    assert "registered as worker" not in worker.log()
    server = server_factory("--port", str(port), "--max-frames", "3000", "--target-return", "none", "--linger", "3")
    assert worker.wait(timeout=DEADLINE) == 0, worker.log()[-3000:]
    assert "registered as worker 1 " in worker.log() and "training is over" in worker.log()
    assert server.wait(timeout=DEADLINE) == 0, server.log()[-3000:]
    _, state = checkpoint.load_latest(server.checkpoint_dir)
    assert state["store"]["global_frames"] >= 3000


# --- 6. the end of a run ------------------------------------------------------------------


def test_spent_frame_budget_stops_every_worker_and_then_the_server(server_factory, worker_factory):
    """When T reaches --max-frames every worker exits 0 by itself, the server exits 0 after --linger, with a final checkpoint."""
    max_frames = 6000
    server = server_factory("--max-frames", str(max_frames), "--target-return", "none", "--linger", "3",
                            "--checkpoint-interval", "0")
    workers = [worker_factory(server.address, f"w{i}", "--envs", "2") for i in range(2)]
    for worker in workers:
        assert worker.wait(timeout=DEADLINE) == 0, worker.log()[-3000:]
        assert "training is over" in worker.log()
    assert server.wait(timeout=DEADLINE) == 0, server.log()[-3000:]
    _, state = checkpoint.load_latest(server.checkpoint_dir)
    assert state["training_done"]
    assert state["store"]["global_frames"] >= max_frames
    # Pushes that arrive after the end are answered but not applied: T overshoots by less than one push per worker.
    assert state["store"]["global_frames"] < max_frames + len(workers) * 2 * 5
