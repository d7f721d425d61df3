"""Single-flight: identical misses in flight at the same time share one provider call.

A flight is keyed by (request key, image index). The first request to miss an index owns
its flight; later ones await the owner's future. A failed call fails every waiter with the
same error, and the flight is gone, so the next request tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from policies.models import Entry

__all__ = ["Flights", "Landed"]


@dataclass(frozen=True, slots=True)
class Landed:
    """What a flight delivers: the entry, the bytes it stored and, when its request's answer
    carries the image, their base64 (encoded off the event loop)."""

    entry: Entry
    data: bytes
    b64: bytes | None = None


class Flights:
    def __init__(self) -> None:
        self._inflight: dict[tuple[str, int], asyncio.Future[Landed]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    def join(self, key: str, index: int) -> asyncio.Future[Landed] | None:
        return self._inflight.get((key, index))

    def take_off(self, key: str, indexes: Iterable[int]) -> dict[int, asyncio.Future[Landed]]:
        """Open a flight for each index that has none; return the ones this caller owns."""
        loop = asyncio.get_running_loop()
        owned: dict[int, asyncio.Future[Landed]] = {}
        for index in indexes:
            if (key, index) in self._inflight:
                continue
            future: asyncio.Future[Landed] = loop.create_future()
            # A failure nobody awaited must not log "exception was never retrieved".
            future.add_done_callback(_consume)
            self._inflight[(key, index)] = future
            owned[index] = future
        return owned

    def land(self, key: str, index: int, landed: Landed) -> None:
        future = self._inflight.pop((key, index), None)
        if future is not None and not future.done():
            future.set_result(landed)

    def crash(self, key: str, indexes: Iterable[int], error: BaseException) -> None:
        for index in indexes:
            future = self._inflight.pop((key, index), None)
            if future is not None and not future.done():
                future.set_exception(error)


def _consume(future: asyncio.Future[Landed]) -> None:
    if not future.cancelled():
        future.exception()
