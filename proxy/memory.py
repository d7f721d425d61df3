"""Bytes kept in memory by sha256: base64 of recently served blobs, and the blobs themselves.

Blobs are immutable and content-addressed, so nothing kept here ever goes stale: a hot hit
does not encode the same megabytes again, and a hot `GET /images/...` neither touches the
disk nor copies the image per request. Both are bounded by bytes and drop the least recently
used first; one item may take at most a quarter of the bound, so one huge image cannot flush
everything.
"""

from __future__ import annotations

import base64

from proxy.lru import ByteLRU

__all__ = ["B64Cache", "BytesLRU"]


def _length(_sha256: str, data: bytes) -> int:
    return len(data)


class BytesLRU(ByteLRU[str, bytes]):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, sizeof=_length)


class B64Cache(BytesLRU):
    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        super().__init__(max_bytes)

    def encode(self, sha256: str, data: bytes) -> bytes:
        found = self.get(sha256)
        if found is None:
            found = base64.b64encode(data)
            self.put(sha256, found)
        return found
