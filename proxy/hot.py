"""Rendered answers to requests seen before: the hit path that skips the work a hit repeats.

A request body that was answered from the cache once is answered again from memory: the
same raw bytes, from the same cache scope, at the same base URL, normalize to the same key
and the same images, so parsing, normalization, hashing, both store reads and the JSON
build would only repeat themselves. What a hit must still do per request (authentication,
the key's model list, the rate limit, the hit row, the lookup event) the driver does, as
for any other hit (`proxy.service.ImageService.handle`: the memo is one of its steps).

Entries are immutable: only a TTL can end one (`expires`, from `policies.cache.fresh_until`).
The map is a `proxy.lru.ByteLRU`: bounded by bytes, the least recently used answer dropped
first. Each worker process has its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.lru import ByteLRU

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
        # Kept as the response takes them: copied from a multidict ~0.3 µs faster than a dict.
        self.headers = CIMultiDictProxy(CIMultiDict(self.headers))
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


def _answer_size(key: HotKey, answer: HotAnswer) -> int:
    return answer.size + len(key[3])


class HotAnswers(ByteLRU[HotKey, HotAnswer]):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, sizeof=_answer_size)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: HotKey, now: float = math.inf) -> HotAnswer | None:
        """The answer unless it expired by `now` (then it is dropped). ByteLRU.get inlined,
        with the TTL check between its two steps: the hit path gains no call."""
        answer = self._items.get(key)
        if answer is None:
            return None
        if now > answer.expires:
            self.pop(key)
            return None
        self._items.move_to_end(key)
        return answer

    def put(self, key: HotKey, answer: HotAnswer) -> bool:
        """Kept unless the request body is over MAX_BODY or the answer over a quarter of
        the bound (one answer must not flush all)."""
        return len(key[3]) <= MAX_BODY and super().put(key, answer)
