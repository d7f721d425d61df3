"""Base64 of recently served blobs, so a hot hit does not encode the same megabytes again.

Blobs are immutable, so an entry never goes stale; the cache is bounded by bytes and drops
the least recently used first.
"""

from __future__ import annotations

import base64
from collections import OrderedDict

__all__ = ["B64Cache"]


class B64Cache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def encode(self, sha256: str, data: bytes) -> bytes:
        found = self._items.get(sha256)
        if found is not None:
            self._items.move_to_end(sha256)
            return found
        encoded = base64.b64encode(data)
        if len(encoded) <= self._max // 4:  # one huge image must not flush everything
            self._items[sha256] = encoded
            self._size += len(encoded)
            while self._size > self._max:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)
        return encoded
