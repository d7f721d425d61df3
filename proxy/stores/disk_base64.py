"""The base64 text of served blobs, kept on disk beside them (a `DiskBlobStore`'s part).

A `b64_json` answer carries its image as base64: 4/3 of the image's size, and encoding a
1.5 MB image again costs more CPU than all the rest of a hit from the stores (BENCHMARKS.md,
round two: 54 % of a 1.5 MB store hit). The first answer that needs a blob's base64 encodes
it and keeps the text here; every later one reads it, as it would read the image.

Kept in a diskcache directory of its own, so the blob store's keys, counts and migrations
see only blobs. Bounded by bytes when the blob store is (the least recently stored text goes
first: a read writes nothing, and a text dropped is only encoded again), and a blob's text
is dropped with the blob: its presence never outlives the image's. Like blobs, the text is
checked (decoded and hashed against the blob's address) the first time this process reads a
file and when it changes (`proxy.stores.verified_files`); a file that fails is deleted and
reported as not kept.
"""

from __future__ import annotations

import binascii
import hashlib
import io
from pathlib import Path
from typing import Final

import diskcache

from proxy.stores.verified_files import VerifiedFiles, signature

__all__ = ["Base64Copies"]

_SQLITE: Final[dict[str, object]] = {"sqlite_journal_mode": "wal", "sqlite_synchronous": 1}
_UNBOUNDED: Final = 2**62


def _encodes(text: bytes, sha256: str) -> bool:
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        return False
    return hashlib.sha256(data).hexdigest() == sha256


class Base64Copies:
    """sha256 -> the base64 (ASCII bytes) of that blob, one file each in `directory`."""

    def __init__(self, directory: Path, *, max_bytes: int | None = None) -> None:
        self._cache = diskcache.Cache(
            str(directory),
            eviction_policy="none" if max_bytes is None else "least-recently-stored",
            size_limit=_UNBOUNDED if max_bytes is None else max(1, max_bytes),
            disk_min_file_size=0,
            **_SQLITE,
        )
        self._verified = VerifiedFiles()

    def get(self, sha256: str) -> bytes | None:
        """The kept text, checked; None when none is kept (or it failed its check)."""
        handle = self._cache.get(sha256, read=True)
        if not isinstance(handle, io.BufferedReader):
            return None
        with handle:
            before = signature(handle)
            text = handle.read()
            after = signature(handle)
        if self._verified.trusted(sha256, before, after):
            return text
        if not _encodes(text, sha256):
            self.discard(sha256)
            return None
        self._verified.remember(sha256, before, after)
        return text

    def keep(self, sha256: str, text: bytes) -> None:
        """Keep `text`, which the caller encoded from the verified blob `sha256`. Replaces
        what is there: a reader only keeps after finding nothing usable (a row whose file is
        gone included)."""
        self._cache.set(sha256, text)  # writes the file, then the row, in one transaction

    def discard(self, sha256: str) -> None:
        self._cache.delete(sha256)
        self._verified.forget(sha256)

    def close(self) -> None:
        self._cache.close()
