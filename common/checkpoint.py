"""Checkpoints: one file holding everything needed to resume, written atomically, the last K kept."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^checkpoint-(\d{12})\.pt$")


def checkpoint_path(directory: Path, version: int) -> Path:
    return directory / f"checkpoint-{version:012d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in directory, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def save(directory: Path, version: int, state: dict[str, Any], keep: int) -> Path:
    """Writes state as the checkpoint of version: temp file, fsync, rename; then prunes to the newest keep."""
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory, version)
    descriptor, temp_name = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(state, handle)
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
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    checkpoints = list_checkpoints(directory)
    return (checkpoints[-1], load(checkpoints[-1])) if checkpoints else None
