"""`FlightLock` adapters: in one process (`MemoryFlightLock`), and across the worker
processes of one machine (`FcntlFlightLock`: a POSIX record lock per key).

With `--workers N`, identical misses may land in different processes; the flight owner in
each takes the key's lock before generating and looks in the cache again once it holds it,
so the second process finds the first one's images instead of paying for them again. One
lock file, one byte per key (at an offset taken from the key), so the lock costs no file per
key and unrelated keys practically never meet.

POSIX record locks belong to the process, so two flights of one process would both "hold"
the same byte; the in-process lock in front makes the second wait, as the port promises."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import secrets
import time
from pathlib import Path

from proxy.ports import FlightHold

__all__ = ["FcntlFlightLock", "MemoryFlightLock", "key_offset"]

_SPAN = 2**31 - 1
_RETRY_SECONDS = 0.005  # after a false EDEADLK (see `_wait_for_byte`)


def key_offset(key: str) -> int:
    """The byte of the lock file that stands for a request key (a hex digest)."""
    return int(key[:15], 16) % _SPAN


def _wait_for_byte(fd: int, offset: int) -> None:
    """Wait for the byte at `offset` (in a thread). Record locks belong to the process, so
    the kernel's deadlock detection takes two workers that each hold one key while another
    of their flights waits for the other's key for a cycle and answers EDEADLK. A flight
    holds one key and waits for nothing while it does, so there is no real cycle: retry."""
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
        except OSError as exc:
            if exc.errno != errno.EDEADLK:
                raise
            time.sleep(_RETRY_SECONDS)
        else:
            return


class MemoryFlightLock:
    """Exclusive per key within one process; a waiter wakes when the holder releases."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[str, asyncio.Future[bool]]] = {}

    def _slot(self, key: str) -> int:
        return key_offset(key)

    async def acquire(self, key: str) -> FlightHold:
        slot, waited = self._slot(key), False
        while (held := self._held.get(slot)) is not None:
            waited = True
            await asyncio.shield(held[1])
        token = secrets.token_hex(8)
        self._held[slot] = (token, asyncio.get_running_loop().create_future())
        try:
            waited = await self._outer(slot) or waited
        except BaseException:
            self._drop(slot, landed=False)
            raise
        return FlightHold(key, waited, token)

    async def _outer(self, slot: int) -> bool:
        """Take whatever lock sits beyond this process; whether that meant waiting."""
        return False

    def _unlock_outer(self, slot: int) -> None:
        return None

    async def renew(self, hold: FlightHold) -> bool:
        held = self._held.get(self._slot(hold.key))
        return held is not None and held[0] == hold.token

    async def release(self, hold: FlightHold, *, landed: bool) -> None:
        slot = self._slot(hold.key)
        held = self._held.get(slot)
        if held is None or held[0] != hold.token:
            return  # not ours (released twice)
        self._unlock_outer(slot)
        self._drop(slot, landed=landed)

    def _drop(self, slot: int, *, landed: bool) -> None:
        _, future = self._held.pop(slot)
        if not future.done():
            future.set_result(landed)


class FcntlFlightLock(MemoryFlightLock):
    """Exclusive per key across the processes that share `path` (no lease: the kernel drops
    a dead process's locks, so `renew` only says whether this caller still holds it)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    async def _outer(self, slot: int) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)  # a free byte: inline
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            waiting = asyncio.ensure_future(asyncio.to_thread(_wait_for_byte, self._fd, slot))
            try:  # another process holds it
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                # The thread cannot be stopped: when it gets the byte, let it go again, or
                # every other process would wait for this key as long as this one lives.
                waiting.add_done_callback(lambda done: self._abandoned(done, slot))
                raise
            return True
        return False

    def _abandoned(self, waiting: asyncio.Future[None], slot: int) -> None:
        """A cancelled waiter's thread finished: release the byte it took, unless a later
        flight of this process holds the key now (its release lets the byte go)."""
        if not waiting.cancelled() and waiting.exception() is None and slot not in self._held:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot)

    def _unlock_outer(self, slot: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot)

    def close(self) -> None:
        os.close(self._fd)
