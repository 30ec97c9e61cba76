"""Key files the service creates beside its database (the vault master key, the EAR signing
key): created once, so that a crash leaves no file or the whole one, and so that once the
creation returns the file survives a power loss — the file is fsynced before it is linked into
place, and each directory whose entries changed is fsynced after (link(2) and mkdir(2) are
durable only then). Data sealed under a key that a power loss could take back would be lost."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["create_private_file", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """``mkdir -p``, each created directory made durable in its parent."""
    missing = []
    here = path
    while not here.exists():
        missing.append(here)
        here = here.parent
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def create_private_file(path: Path, data: bytes) -> bytes:
    """Create ``path`` with ``data``, readable by the owner only (0600), unless it exists; the
    bytes the file holds afterwards (another process's, when it created the file first)."""
    _make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # never replaces: a key in use is never swapped for another
        except FileExistsError:
            return path.read_bytes()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return data
