"""Checkpoints under faults: a full disk, damaged files, and temp files left by a killed write.

Real server processes on 127.0.0.1. The full disk is real: a 1 MiB tmpfs mounted as the
checkpoint directory and filled up (the tests run as root, where chmod stops nothing; the
test is skipped where mounting is not allowed).
"""

from __future__ import annotations

import errno
import io
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from asyncrl.common import checkpoint, tensors
from asyncrl.v1 import parameter_server_pb2 as pb
from conftest import Process, ServerProcess, read_scalars, register

DEADLINE = 120.0
FLAGS = ("--seed", "7", "--target-return", "none", "--max-frames", "100000000", "--shutdown-grace", "1")


def wait_for(predicate: Callable[[], object], what: str, server: ServerProcess, timeout: float = DEADLINE) -> object:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert server.popen.poll() is None, f"server exited waiting for {what}:\n{server.log()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{server.log()[-3000:]}"
        time.sleep(0.2)
    return result


def push(server: ServerProcess, worker: pb.RegisterWorkerResponse, sequence_number: int) -> pb.PushGradientsResponse:
    layout = server.stub.GetConfig(pb.GetConfigRequest(), timeout=10).config.model.layout
    gradients = [tensors.encode(s.name, torch.full(tuple(s.shape), 0.01)) for s in layout]
    return server.stub.PushGradients(pb.PushGradientsRequest(
        worker_id=worker.worker_id, base_version=server.status().version, sequence_number=sequence_number, frames=5,
        gradients=gradients, worker_secret=worker.worker_secret), timeout=30)


def stop(server: ServerProcess) -> None:
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0, server.log()[-3000:]
    server.stop()


# --- a full disk -------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted where the server's checkpoint directory will be."""
    mount_point = tmp_path / "server" / "checkpoints"
    mount_point.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Writes a file until the file system has no space left; returns it."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: nothing left to flush at close
        try:
            while True:
                handle.write(bytes(4096))
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prometheus_checkpoint_failures(port: int, file: str = "") -> float:
    """asyncrl_checkpoint_failures_total, of one file's label (all of them when file is empty)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    prefix = "asyncrl_checkpoint_failures_total{" + (f'file="{file}"' if file else "")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_full_disk_is_logged_counted_retried_and_the_server_serves_on(small_disk: Path, tmp_path: Path):
    """With the disk of the checkpoints and the TensorBoard events full: checkpoints and event writes fail (logged,
    counted in GetStatus and Prometheus), registration and pushes still work, no temp file is left; once space is
    back the next interval's checkpoint and events are written, and SIGTERM ends the server with exit status 0."""
    metrics_port = free_port()
    events = small_disk / "tensorboard"
    server = ServerProcess(tmp_path / "server", *FLAGS, "--checkpoint-interval", "1",
                           "--metrics-port", str(metrics_port), "--tensorboard-dir", str(events))
    try:
        worker = register(server.stub, "before-full")
        push(server, worker, 1)
        wait_for(lambda: checkpoint.list_checkpoints(small_disk), "a first checkpoint", server)
        wait_for(lambda: "charts/SPS" in read_scalars(events), "the first TensorBoard events", server)
        filler = fill(small_disk)

        newcomer = register(server.stub, "while-full")  # its next-worker-id write fails: logged, counted
        assert newcomer.worker_id == worker.worker_id + 1
        assert server.status().checkpoint_failures >= 1
        before = server.status()
        for sequence in (2, 3):
            push(server, worker, sequence)
        failing = wait_for(lambda: (s := server.status()).checkpoint_failures >= before.checkpoint_failures + 2 and s,
                           "periodic checkpoints to fail", server)
        assert failing.version == before.version + 2
        assert "No space left on device" in server.log()
        assert "checkpoint of version" in server.log() and "failed" in server.log()
        assert prometheus_checkpoint_failures(metrics_port) >= failing.checkpoint_failures
        assert prometheus_checkpoint_failures(metrics_port, "checkpoint") >= 2
        wait_for(lambda: prometheus_checkpoint_failures(metrics_port, "tensorboard") >= 2,
                 "TensorBoard writes to fail", server)
        assert server.log().count(f"TensorBoard events in {events} could not be written") == 1  # once per outage
        assert not [p.name for p in small_disk.iterdir() if p.name.endswith(".tmp")]
        push(server, worker, 4)  # still serving

        filler.unlink()
        wait_for(lambda: checkpoint.checkpoint_path(small_disk, failing.version + 1).exists(),
                 "the checkpoint to be written once space is back", server)
        wait_for(lambda: f"TensorBoard events in {events} are written again" in server.log(),
                 "TensorBoard events to be written again", server)
        assert {"charts/SPS", "charts/learning_rate"} <= set(read_scalars(events))  # whole records only
        _, state = checkpoint.load_latest(small_disk)
        assert state["store"]["version"] == failing.version + 1
        assert server.popen.poll() is None
        stop(server)  # SIGTERM: exit status 0
        assert "Traceback" not in server.log()
    finally:
        server.stop()


# --- damaged checkpoints ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server directory holding checkpoints of version 2 (older) and 4 (newest), written by real servers."""
    directory = tmp_path_factory.mktemp("two-checkpoints")
    for resume in ((), ("--resume",)):
        server = ServerProcess(directory, *FLAGS, "--checkpoint-interval", "0", *resume)
        worker = register(server.stub)
        for sequence in (1, 2):
            push(server, worker, sequence)
        stop(server)
    assert [p.name for p in checkpoint.list_checkpoints(directory / "checkpoints")] == [
        "checkpoint-000000000002.pt", "checkpoint-000000000004.pt"]
    return directory


def tensor_data_offset(data: bytes) -> int:
    """Where the first tensor's bytes begin in a checkpoint file (inside the torch.save zip after the header)."""
    payload_start = len(checkpoint.HEADER) + 64 + 1
    archive = zipfile.ZipFile(io.BytesIO(data[payload_start:]))
    entry = next(info for info in archive.infolist() if "/data/" in info.filename)
    local = data[payload_start + entry.header_offset:]
    name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    return payload_start + entry.header_offset + 30 + name_length + extra_length


def flip_tensor_bytes(data: bytes) -> bytes:
    """16 bytes of the first tensor's data inverted: still a loadable torch file, with other weights."""
    start = tensor_data_offset(data)
    damaged = data[:start] + bytes(b ^ 0xFF for b in data[start:start + 16]) + data[start + 16:]
    payload = damaged[len(checkpoint.HEADER) + 65:]
    torch.load(io.BytesIO(payload), weights_only=True)  # without the checksum, this would be resumed from
    return damaged


DAMAGES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("truncated", lambda data: data[: len(data) // 2], "checksum mismatch"),
    ("zeroed", lambda data: bytes(len(data)), "not an asyncrl checkpoint"),
    ("garbage", lambda data: bytes(range(256)) * (len(data) // 256), "not an asyncrl checkpoint"),
    ("flipped-tensor-bytes", flip_tensor_bytes, "checksum mismatch"),
]


@pytest.mark.parametrize(("damage", "reason"), [(d, r) for _, d, r in DAMAGES], ids=[i for i, _, _ in DAMAGES])
def test_resume_skips_a_damaged_newest_checkpoint(two_checkpoints: Path, tmp_path: Path,
                                                   damage: Callable[[bytes], bytes], reason: str):
    """--resume names the damaged newest file and why, and resumes from the older valid one."""
    directory = tmp_path / "server"
    shutil.copytree(two_checkpoints, directory)
    newest = checkpoint.checkpoint_path(directory / "checkpoints", 4)
    newest.write_bytes(damage(newest.read_bytes()))
    server = ServerProcess(directory, *FLAGS, "--checkpoint-interval", "0", "--resume")
    try:
        status = server.status()
        assert (status.version, status.global_frames) == (2, 10)
        assert f"skipping checkpoint {newest}: {reason}" in server.log()
        assert "resuming from" in server.log() and "checkpoint-000000000002.pt" in server.log()
    finally:
        server.stop()


def _nan_in_first_parameter(state: dict) -> None:
    first = next(iter(state["store"]["parameters"].values()))
    first.view(-1)[0] = float("nan")


def _wrong_layout(state: dict) -> None:
    parameters = state["store"]["parameters"]
    name = next(iter(parameters))
    parameters[name] = torch.zeros(3, 3)


def _counter_over_int64(state: dict) -> None:
    state["store"]["global_frames"] = 2**63


def _another_shards(state: dict) -> None:
    state["shard"] = {"index": 1, "count": 2}


UNFIT: list[tuple[str, Callable[[dict], None], str]] = [
    ("nan-tensor", _nan_in_first_parameter, "holds NaN or Inf"),
    ("wrong-layout", _wrong_layout, "is not a float32 tensor of shape"),
    ("counter-over-int64", _counter_over_int64, f"global_frames {2**63} is not a count in 0..2**63 - 1"),
    ("another-shards", _another_shards, "holds shard 1 of 2; this server is"),
]


@pytest.mark.parametrize(("change", "reason"), [(c, r) for _, c, r in UNFIT], ids=[i for i, _, _ in UNFIT])
def test_resume_skips_a_verified_checkpoint_that_does_not_fit(two_checkpoints: Path, tmp_path: Path,
                                                              change: Callable[[dict], None], reason: str):
    """A newest checkpoint whose checksum is valid (written with checkpoint.encode) but whose run cannot be resumed:
    --resume names it and why, and resumes from the older one."""
    directory = tmp_path / "server"
    shutil.copytree(two_checkpoints, directory)
    newest = checkpoint.checkpoint_path(directory / "checkpoints", 4)
    state = checkpoint.load(newest)
    change(state)
    newest.write_bytes(checkpoint.encode(state))
    assert checkpoint.load(newest) is not None  # the checksum verifies
    server = ServerProcess(directory, *FLAGS, "--checkpoint-interval", "0", "--resume")
    try:
        status = server.status()
        assert (status.version, status.global_frames) == (2, 10)
        assert f"skipping checkpoint {newest}: " in server.log()
        (line,) = [line for line in server.log().splitlines() if f"skipping checkpoint {newest}" in line]
        assert reason in line
        assert "resuming from" in server.log() and "checkpoint-000000000002.pt" in server.log()
    finally:
        server.stop()


def test_resume_with_no_usable_checkpoint_exits_2_naming_the_directory(two_checkpoints: Path, tmp_path: Path):
    directory = tmp_path / "server"
    shutil.copytree(two_checkpoints, directory)
    checkpoints = directory / "checkpoints"
    for path in checkpoint.list_checkpoints(checkpoints):
        path.write_bytes(path.read_bytes()[:100])
    process = Process(["server", "--port", "0", "--checkpoint-dir", str(checkpoints), "--resume", *FLAGS],
                      directory / "resume.log")
    assert process.wait(timeout=DEADLINE) == 2, process.log()
    process.stop()
    log = process.log()
    assert "Traceback" not in log
    last = log.strip().splitlines()[-1]
    assert last.startswith("asyncrl server: error: no usable checkpoint in ") and str(checkpoints) in last
    assert log.count("skipping checkpoint") == 2


def test_stale_temp_files_are_removed_at_start(two_checkpoints: Path, tmp_path: Path):
    """A write killed midway (SIGKILL) leaves .checkpoint-*.tmp or .next-worker-id-*.tmp: removed when a server starts."""
    directory = tmp_path / "server"
    shutil.copytree(two_checkpoints, directory)
    checkpoints = directory / "checkpoints"
    stale = [checkpoints / ".checkpoint-000000000006-k2j4h1.tmp", checkpoints / ".next-worker-id-a8s7d6.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    kept = checkpoints / "notes.tmp"
    kept.write_text("not ours")
    server = ServerProcess(directory, *FLAGS, "--checkpoint-interval", "0", "--resume")
    try:
        assert server.status().version == 4
        assert not any(path.exists() for path in stale)
        assert kept.exists()
        assert all(f"removed {path}" in server.log() for path in stale)
    finally:
        server.stop()


# --- the file format --------------------------------------------------------------------------------------------


def test_checkpoint_files_carry_a_checksum_and_first_format_files_still_load(tmp_path: Path):
    """New files start with the header and the payload's sha256; a bare torch.save (the first format) loads unverified."""
    state = {"store": {"version": 3, "parameters": {"w": torch.ones(2)}}}
    written = checkpoint.save(tmp_path, 3, state, keep=2)
    assert written.read_bytes().startswith(checkpoint.HEADER)
    assert checkpoint.load(written)["store"]["version"] == 3
    legacy = checkpoint.checkpoint_path(tmp_path, 1)
    torch.save(state, legacy)
    assert torch.equal(checkpoint.load(legacy)["store"]["parameters"]["w"], torch.ones(2))


def test_a_tensorboard_dir_that_cannot_be_written_stops_the_server_at_start_with_one_line(tmp_path: Path):
    """The event file is opened at start: a bad --tensorboard-dir is a mistake to report now, not a disk fault to count
    every 2 s for the rest of the run."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    process = Process(["server", "--port", "0", "--checkpoint-dir", str(tmp_path / "checkpoints"),
                       "--tensorboard-dir", str(blocker / "tensorboard"), *FLAGS], tmp_path / "server.log")
    assert process.wait(timeout=DEADLINE) == 2, process.log()
    process.stop()
    log = process.log()
    assert "Traceback" not in log
    last = log.strip().splitlines()[-1]
    assert last.startswith(f"asyncrl server: error: --tensorboard-dir {blocker / 'tensorboard'}: cannot write there"), last
