"""Crash-safe file writing: whole writes, atomic replace, and fsync of file and folder when asked."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def write_all(fd: int, data: bytes, path: Path) -> None:
    """Write all of `data` to `fd` or raise (a short write means a full disk)."""
    if os.write(fd, data) != len(data):
        raise OSError(errno.ENOSPC, "short write", str(path))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, fsync: bool, tmp_suffix: str = ".tmp") -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new file, never a mix."""
    tmp = path.with_name(path.name + tmp_suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data, tmp)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)
