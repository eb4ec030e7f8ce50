"""File operations that leave no readable copy of people's values behind.

Withdrawal rewrites the database and the scrub rewrites run files; both replace a file by a
new copy and zero the old one's blocks, and both delete stale copies the same way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def zero_fd(fd: int) -> None:
    """Overwrite the replaced file with zeros, unless another hard link still refers to it."""
    info = os.fstat(fd)
    if info.st_nlink > 0:
        return
    block = bytes(1 << 20)
    os.lseek(fd, 0, os.SEEK_SET)
    remaining = info.st_size
    while remaining > 0:
        remaining -= os.write(fd, block[: min(remaining, len(block))])
    os.fsync(fd)


def remove_zeroed(path: Path) -> None:
    """Delete a file, zeroing its blocks first (copies hold people's values too)."""
    if not path.exists():
        return
    if os.name != "posix":
        path.unlink()
        return
    fd = os.open(path, os.O_RDWR)
    try:
        path.unlink()
        zero_fd(fd)
    finally:
        os.close(fd)


def fsync(path: Path) -> None:
    """Flush a file, or a folder (which makes a rename in it durable), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_zeroed(tmp: Path, path: Path) -> None:
    """Move ``tmp`` over ``path`` (atomic, durable) and zero the old file's blocks.

    ``tmp`` takes ``path``'s permission bits. On Windows, which cannot replace a file that is
    open, the old blocks are left to the filesystem.
    """
    os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    fsync(tmp)
    if os.name != "posix":
        os.replace(tmp, path)
        return
    old = os.open(path, os.O_RDWR)
    try:
        os.replace(tmp, path)
        fsync(path.parent)
        zero_fd(old)
    finally:
        os.close(old)
