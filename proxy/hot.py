"""Rendered answers to requests seen before: the hit path that skips the work a hit repeats.

A request body that was answered from the cache once is answered again from memory: the
same raw bytes, from the same cache scope, at the same base URL, normalize to the same key
and the same images, so parsing, normalization, hashing, both store reads and the JSON
build would only repeat themselves. What a hit must still do per request (authentication,
the key's model list, rate limits, the ledger row, metrics, the log line) the route does.

Entries are immutable: only a TTL can end one (`fresh_until`). The map is bounded by bytes
and drops the least recently used answer first. Each worker process has its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["HotAnswer", "HotAnswers", "HotKey"]

# (route path, cache scope, base URL for url mode, raw request body)
HotKey = tuple[str, str, str, bytes]
_OVERHEAD = 1024  # per answer: the key tuple, the headers, the object itself
MAX_BODY = 64 * 1024  # larger request bodies are not kept (a prompt is at most 32,000 chars)


@dataclass(slots=True)
class HotAnswer:
    """One hit response, rendered once. Only `created` changes between requests."""

    request_key: str
    requested_model: str  # as the client named it: a key's model list is checked against it
    model: str
    provider: str
    images: int
    saved_micros: int
    expires: float
    headers: Mapping[str, str]
    tail: bytes  # the JSON body after the value of "created"
    _second: int = field(default=-1, repr=False)
    _body: bytes = field(default=b"", repr=False)
    log_fields: dict[str, object] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.log_fields = {  # the request's log line, as for a hit through the stores
            "key": self.request_key[:12],
            "model": self.model,
            "provider": self.provider,
            "images": self.images,
            "cost_usd": self.headers.get("X-Imagegate-Cost-USD", "0"),
        }

    def body(self, created: int) -> bytes:
        """The body for this second; every request within the same second shares one."""
        if created != self._second:
            self._body = b'{"created":%d' % created + self.tail
            self._second = created
        return self._body

    @property
    def size(self) -> int:
        return 2 * len(self.tail) + _OVERHEAD


class HotAnswers:
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: OrderedDict[HotKey, HotAnswer] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._max > 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._size

    def get(self, key: HotKey, now: float) -> HotAnswer | None:
        answer = self._items.get(key)
        if answer is None:
            return None
        if now > answer.expires:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return answer

    def put(self, key: HotKey, answer: HotAnswer) -> None:
        size = answer.size + len(key[3])
        if len(key[3]) > MAX_BODY or size > self._max // 4:  # one answer must not flush all
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = answer
        self._size += size
        while self._size > self._max:
            oldest = next(iter(self._items))
            self._drop(oldest)

    def _drop(self, key: HotKey) -> None:
        answer = self._items.pop(key)
        self._size -= answer.size + len(key[3])
