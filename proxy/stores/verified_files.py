"""Files this process has verified against their content address, remembered by signature.

Hashing a file on every read would cost more than the read. A file is hashed the first time
this process reads it and again whenever its (path, size, mtime_ns, inode) changes: a file
read whole between two equal signatures that match the remembered one is the verified file.
Known limit: a same-size in-place rewrite within the filesystem's timestamp granularity of
the last verification, or silent bit rot, is only caught by a process that has not verified
that file yet. Used by the disk blob store and by the base64 copies kept beside it.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Final, NamedTuple

from proxy.lru import ByteLRU

__all__ = ["Signature", "VerifiedFiles", "signature"]

_REMEMBERED: Final = 65_536  # signatures kept per process


class Signature(NamedTuple):
    """What must be unchanged for a verified file to stay verified without re-hashing."""

    path: str
    size: int
    mtime_ns: int
    ino: int


def signature(handle: io.BufferedReader) -> Signature:
    st = os.fstat(handle.fileno())
    return Signature(str(handle.name), st.st_size, st.st_mtime_ns, st.st_ino)


def _one(_key: str, _signature: Signature) -> int:
    return 1  # bounded by its count


class VerifiedFiles:
    """key -> the signature of the file verified for it; thread-safe, bounded by count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memo: ByteLRU[str, Signature] = ByteLRU(_REMEMBERED, sizeof=_one, max_item=1)

    def trusted(self, key: str, before: Signature, after: Signature) -> bool:
        """The file did not change while it was read, and is the one verified for `key`."""
        with self._lock:
            return before == after and self._memo.get(key) == before

    def remember(self, key: str, before: Signature, after: Signature) -> None:
        """`key`'s file hashed right; kept unless it changed while it was hashed."""
        if before == after:
            with self._lock:
                self._memo.put(key, before)

    def forget(self, key: str) -> None:
        with self._lock:
            self._memo.pop(key)
