"""Bytes kept in memory by sha256: base64 of recently served blobs, and the blobs themselves.

Blobs are immutable and content-addressed, so nothing kept here ever goes stale: a hot hit
does not encode the same megabytes again, and a hot `GET /images/...` neither touches the
disk nor copies the image per request. Both are bounded by bytes and drop the least recently
used first; one item may take at most a quarter of the bound, so one huge image cannot flush
everything.
"""

from __future__ import annotations

import base64
from collections import OrderedDict

__all__ = ["B64Cache", "BytesLRU"]


class BytesLRU:
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, sha256: str) -> bytes | None:
        found = self._items.get(sha256)
        if found is not None:
            self._items.move_to_end(sha256)
        return found

    def put(self, sha256: str, data: bytes) -> None:
        if sha256 in self._items or len(data) > self._max // 4:
            return
        self._items[sha256] = data
        self._size += len(data)
        while self._size > self._max:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped)

    @property
    def bytes(self) -> int:
        return self._size


class B64Cache(BytesLRU):
    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        super().__init__(max_bytes)

    def encode(self, sha256: str, data: bytes) -> bytes:
        found = self.get(sha256)
        if found is None:
            found = base64.b64encode(data)
            self.put(sha256, found)
        return found
