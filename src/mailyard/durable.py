"""Durability on disk: making a directory's entries (a create or a rename) survive a crash."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir_fd(dir_fd: int) -> None:
    """Make the entries of the directory behind `dir_fd` durable (an O_PATH descriptor
    too: it is reopened for reading first, since fsync needs a real one)."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the directory entries of `path` durable (a rename is not, until this)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
