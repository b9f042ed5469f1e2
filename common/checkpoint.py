"""Checkpoints: one file holding everything needed to resume, written atomically, the last K kept."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

_NAME = re.compile(r"^checkpoint-(\d{12})\.pt$")
NEXT_WORKER_ID_FILE = "next-worker-id"


def checkpoint_path(directory: Path, version: int) -> Path:
    return directory / f"checkpoint-{version:012d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in directory, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def save(directory: Path, version: int, state: dict[str, Any], keep: int) -> Path:
    """Writes state as the checkpoint of version: temp file, fsync, rename; then prunes to the newest keep."""
    target = checkpoint_path(directory, version)
    _replace_atomically(target, lambda handle: torch.save(state, handle))
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return target


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


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    checkpoints = list_checkpoints(directory)
    return (checkpoints[-1], load(checkpoints[-1])) if checkpoints else None
