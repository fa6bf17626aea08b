"""Private scratch folders, in memory where the operating system has a memory filesystem."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

MEMORY_FS = Path("/dev/shm")  # noqa: S108 - only a parent for mkdtemp (private, 0700)


@contextlib.contextmanager
def scratch_dir(prefix: str, min_free_bytes: int = 0) -> Iterator[str]:
    """A temporary folder, removed afterwards: in memory (``/dev/shm``) where the OS has one
    with ``min_free_bytes`` free (a container may give it only 64 MB), else on disk."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=_memory_parent(min_free_bytes)) as folder:
        yield folder


def _memory_parent(min_free_bytes: int) -> str | None:
    with contextlib.suppress(OSError):
        stats = os.statvfs(MEMORY_FS)
        if stats.f_bavail * stats.f_frsize >= min_free_bytes:
            return str(MEMORY_FS)
    return None
