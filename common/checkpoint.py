"""Checkpoints: one file holding everything needed to resume, checksummed, written atomically, the last K kept.

A checkpoint file is a header line, the sha256 of the payload in hex and a newline, then the
payload, a torch.save of the state:

    asyncrl-checkpoint 2\\n<64 hex digits>\\n<payload>

so a truncated, zeroed or bit-flipped file is recognised as damaged instead of resumed from.
Files of the first format (a bare torch.save, no checksum; written before the header existed)
are still read, unverified: the run they hold would otherwise be lost to an upgrade. Whoever
resumes checks that their tensors are finite and fit the model, but cannot notice changed values.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import torch

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d{12})\.pt$")
# Temp files of an interrupted write (_replace_atomically's names): never read, removed at start.
_TEMP_NAME = re.compile(r"^\.(checkpoint|next-worker-id)-.*\.tmp$")
NEXT_WORKER_ID_FILE = "next-worker-id"
HEADER = b"asyncrl-checkpoint 2\n"
_DIGEST_LENGTH = 64
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format: how first-format checkpoints begin

Restored = TypeVar("Restored")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed from; the message says why (the caller names the file)."""


class NoUsableCheckpoint(RuntimeError):
    """The checkpoint directory holds checkpoints, and none of them can be resumed from."""


def checkpoint_path(directory: Path, version: int) -> Path:
    return directory / f"checkpoint-{version:012d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in directory, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def encode(state: dict[str, Any]) -> bytes:
    """The file's bytes for state: header, checksum, payload."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return HEADER + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def decode(data: bytes) -> dict[str, Any]:
    """The state in a checkpoint file's bytes, once its checksum matches; raises CheckpointError."""
    if data.startswith(HEADER):
        digest_end = len(HEADER) + _DIGEST_LENGTH
        digest, payload = data[len(HEADER):digest_end], data[digest_end + 1:]
        if data[digest_end:digest_end + 1] != b"\n" or hashlib.sha256(payload).hexdigest().encode() != digest:
            raise CheckpointError(f"checksum mismatch: the file is damaged ({len(data)} bytes)")
    elif data.startswith(_ZIP_MAGIC):
        payload = data  # first format: no checksum to verify
    else:
        raise CheckpointError(f"not an asyncrl checkpoint: it starts with {data[:16]!r}")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as error:  # torch raises many kinds on a bad file: all mean "cannot be read"
        raise CheckpointError(f"cannot be read: {type(error).__name__}: {str(error)[:300]}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"holds a {type(state).__name__}, not a checkpoint's dict")
    return state


def save(directory: Path, version: int, state: dict[str, Any], keep: int) -> Path:
    """Writes state as the checkpoint of version: temp file, fsync, rename; then prunes to the newest keep.

    Raises OSError when the write fails (a full disk): the older checkpoints are then untouched.
    """
    target = checkpoint_path(directory, version)
    data = encode(state)
    _replace_atomically(target, lambda handle: handle.write(data))
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def load(path: Path) -> dict[str, Any]:
    """The state in the checkpoint at path; raises CheckpointError if it is damaged or not a checkpoint."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot be read: {error}") from error
    return decode(data)


def _unchanged(state: dict[str, Any]) -> dict[str, Any]:
    return state


def load_latest(
    directory: Path, restore: Callable[[dict[str, Any]], Restored] = _unchanged  # type: ignore[assignment]
) -> tuple[Path, Restored] | None:
    """The newest checkpoint that loads, verifies and that restore accepts, as (path, what restore made of it).

    restore raises CheckpointError for a state it cannot resume (wrong layout, NaN weights).
    Each checkpoint skipped is logged with the reason. None when directory holds no
    checkpoint; NoUsableCheckpoint when it holds some and none is usable.
    """
    checkpoints = list_checkpoints(directory)
    for path in reversed(checkpoints):
        try:
            return path, restore(load(path))
        except CheckpointError as error:
            log.warning("skipping checkpoint %s: %s", path, error)
    if checkpoints:
        raise NoUsableCheckpoint(f"no usable checkpoint in {directory}: all {len(checkpoints)} are damaged or do "
                                 "not fit the run (each is named in a warning above)")
    return None


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Removes the temp files writes killed midway (SIGKILL, power loss) left in directory; returns them."""
    if not directory.is_dir():
        return []
    stale = sorted(p for p in directory.iterdir() if _TEMP_NAME.match(p.name))
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted checkpoint write", path)
    return stale


def save_next_worker_id(directory: Path, next_id: int) -> None:
    """Records, at each registration, the id the next one gets.

    Checkpoints record it too, but a server killed outright may have given out ids since
    its newest checkpoint; a resumed server starts after both, so that a live worker
    holding one of those ids is refused (NOT_FOUND, it registers again) rather than
    mistaken for a newcomer that got the same id.
    """
    _replace_atomically(directory / NEXT_WORKER_ID_FILE, lambda handle: handle.write(f"{next_id}\n".encode()))


def load_next_worker_id(directory: Path) -> int | None:
    try:
        return int((directory / NEXT_WORKER_ID_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _replace_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes target through a temp file in its directory: write, fsync, rename, fsync the directory."""
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.stem}-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)  # make the rename itself durable
    finally:
        os.close(directory_fd)
