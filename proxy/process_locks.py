"""Single-flight across worker processes: a POSIX record lock per request key.

In one process, identical misses share a future (`flights.py`). With `--workers N` they may
land in different processes; the flight owner in each takes this lock before generating and
looks in the cache again once it holds it, so the second process finds the first one's
images instead of paying for them again. One lock file, one byte per key (at an offset taken
from the key), so the lock costs no file per key and unrelated keys practically never meet.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

__all__ = ["ProcessLocks", "key_offset"]

_SPAN = 2**31 - 1
_RETRY_SECONDS = 0.005  # after a false EDEADLK (see `_lock`)


class ProcessLocks:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # POSIX record locks belong to the process and drop when any of its descriptors for
        # the file closes, so the file stays open for the process's life.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        offset = key_offset(key)
        await asyncio.to_thread(_lock, self._fd, offset)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        os.close(self._fd)


def key_offset(key: str) -> int:
    """The byte of the lock file that stands for a request key (a hex digest)."""
    return int(key[:15], 16) % _SPAN


def _lock(fd: int, offset: int) -> None:
    """Wait for the byte at `offset`. Record locks belong to the process, so the kernel's
    deadlock detection takes two workers that each hold one key while another of their
    flights waits for the other's key for a cycle and answers EDEADLK. A flight holds one
    key and waits for nothing while it does, so there is no real cycle: try again."""
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
        except OSError as exc:
            if exc.errno != errno.EDEADLK:
                raise
            time.sleep(_RETRY_SECONDS)
        else:
            return
