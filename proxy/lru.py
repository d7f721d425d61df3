"""One least-recently-used map bounded by size, for every in-memory cache of the shell:
rendered hot answers (`proxy.hot`), base64 and blob bytes (`proxy.memory`) and the disk
store's verified-file signatures (`proxy.stores.disk`, where each item weighs 1).

Each item's size comes from `sizeof(key, value)`, once, when it is put. The total never
exceeds `max_bytes`: the least recently used items go first. One item may take at most
`max_item` (a quarter of the bound unless given), so one huge item cannot flush the rest.
`get` is on the hit path: one dict read and a move to the end, nothing allocated.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["ByteLRU"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    __slots__ = ("_bytes", "_items", "_max", "_max_item", "_sizeof", "_sizes")

    def __init__(
        self, max_bytes: int, *, sizeof: Callable[[K, V], int], max_item: int | None = None
    ) -> None:
        self._max = max_bytes
        self._max_item = max_bytes // 4 if max_item is None else max_item
        self._sizeof = sizeof
        self._bytes = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}  # read only by put and pop: get stays one lookup

    @property
    def max_bytes(self) -> int:
        return self._max

    @property
    def bytes(self) -> int:
        """The sizes of the items kept, summed."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def oldest_first(self) -> list[K]:
        """Least recently used first."""
        return list(self._items)

    def get(self, key: K) -> V | None:
        """The value kept for `key`, now the most recently used; None if there is none."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> bool:
        """Keep `value` (replacing what `key` had) as the most recently used; False when it
        is larger than one item may be, and then nothing changes."""
        size = self._sizeof(key, value)
        if size > self._max_item or size > self._max:
            return False
        if key in self._sizes:
            self.pop(key)
        self._items[key] = value
        self._sizes[key] = size
        self._bytes += size
        while self._bytes > self._max:
            oldest, _ = self._items.popitem(last=False)
            self._bytes -= self._sizes.pop(oldest)
        return True

    def pop(self, key: K) -> V | None:
        """Forget `key`; what it had, or None."""
        found = self._items.pop(key, None)
        if key in self._sizes:
            self._bytes -= self._sizes.pop(key)
        return found
