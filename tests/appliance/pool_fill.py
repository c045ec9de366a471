"""Filling a file system to the last byte, for the full-pool tests (helpers, no fixtures)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fill_filesystem(directory: Path) -> None:
    """Fill ``directory``'s file system to the last byte: fallocate halving to 4 KiB, then small files."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    offset, size = 0, 1 << 30
    try:
        while size >= 4096:
            try:
                os.posix_fallocate(fd, offset, size)
                offset += size
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                size //= 2
        os.fsync(fd)
    finally:
        os.close(fd)
    for index in range(10000):  # what fallocate left: partial blocks, inline extents
        try:
            with open(directory / f"filler-{index}", "wb") as handle:
                handle.write(b"x" * 2048)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            break
    os.sync()
