"""`proxy.flights.Flights`, the in-process single-flight table, on its own (the gateway's
end-to-end tests cover it through the openai SDK; these pin the table's contract)."""

from __future__ import annotations

import asyncio

import pytest

from policies.models import Entry
from proxy.flights import Flights, Landed

KEY = "k" * 64


def landed(index: int) -> Landed:
    entry = Entry(
        blob=f"{index:064x}",
        format="png",
        width=1,
        height=1,
        model="m",
        provider="p",
        cost_micros=1,
        created=0.0,
    )
    return Landed(entry, b"x")


async def test_a_second_take_off_owns_only_the_indexes_nobody_flies() -> None:
    flights = Flights()
    first = flights.take_off(KEY, (0, 1))
    second = flights.take_off(KEY, (1, 2))
    assert sorted(first) == [0, 1] and sorted(second) == [2]
    assert flights.join(KEY, 1) is first[1]  # the first owner's flight was not replaced
    flights.land(KEY, 1, landed(1))
    assert (await first[1]).entry.blob == landed(1).entry.blob
    assert flights.join(KEY, 1) is None and len(flights) == 2


async def test_a_crash_fails_the_waiters_and_clears_the_flight() -> None:
    flights = Flights()
    owned = flights.take_off(KEY, (0,))
    waiter = flights.join(KEY, 0)
    assert waiter is owned[0]
    flights.crash(KEY, (0,), RuntimeError("upstream down"))
    with pytest.raises(RuntimeError, match="upstream down"):
        await asyncio.shield(waiter)
    assert flights.join(KEY, 0) is None and len(flights) == 0
    assert sorted(flights.take_off(KEY, (0,))) == [0]  # the next request tries again
