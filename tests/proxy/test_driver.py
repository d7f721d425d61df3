"""The driver (`ImageService.handle`) over the memory adapters: what it awaits, in what
order, and what it emits. Every port is wrapped in a `Spy` that notes its calls (a test
double of the port, not a patch of our code); events land in a `ListHook`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from policies.errors import InvalidRequest
from policies.ledger_models import KeyRecord
from policies.models import ParsedRequest
from policies.normalize import parse_generation
from proxy.assembly import build_registry, build_service
from proxy.config import Settings
from proxy.observability.events import CacheLookedUp, Charged, Denied, Events, ListHook
from proxy.service import Answered, Ask, ImageService, Repeated
from proxy.stores.async_stores import InlineEntryStore, ThreadedBlobStore
from proxy.stores.build import Stores
from proxy.stores.flight_locks import MemoryFlightLock
from proxy.stores.memory import MemoryBlobStore, MemoryEntryStore
from proxy.stores.memory_ledger import MemoryLedger
from proxy.stores.memory_state import (
    MemoryExperiments,
    MemoryHolds,
    MemoryKeyStore,
    MemoryLimitStore,
)
from tests.conftest import CountingProvider, ManualClock

SECRET = "sk-driver-test-000000000000"


class Spy:
    """Delegates every call to `inner` and notes "<port>.<method>" in `calls` first."""

    def __init__(self, port: str, inner: Any, calls: list[str]) -> None:
        self._port, self._inner, self._calls = port, inner, calls

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(f"{self._port}.{name}")
            return await target(*args, **kwargs)

        return call


class Rig:
    def __init__(self, settings: Settings, clock: ManualClock) -> None:
        self.settings, self.clock = settings, clock
        self.calls: list[str] = []
        self.hook = ListHook()
        self.provider = CountingProvider()
        self.ledger = MemoryLedger()
        self.keys = MemoryKeyStore()
        spy = self._spy
        self.stores = Stores(
            entries=spy("entries", InlineEntryStore(MemoryEntryStore(clock))),
            blobs=spy("blobs", ThreadedBlobStore(MemoryBlobStore())),
            keys=spy("keys", self.keys),
            ledger=spy("ledger", self.ledger),
            reports=spy("reports", self.ledger),  # the driver reads no report
            holds=spy("holds", MemoryHolds()),
            limits=spy("limits", MemoryLimitStore()),
            flights=spy("flights", MemoryFlightLock()),
            experiments=spy("experiments", MemoryExperiments()),
        )
        registry = build_registry(settings, {"placeholder": self.provider})
        self.service: ImageService = build_service(
            settings, settings.catalog, self.stores, registry, Events([self.hook]), clock,
        )  # fmt: skip

    def _spy(self, port: str, inner: Any) -> Any:
        return Spy(port, inner, self.calls)

    def ask(self, body: Mapping[str, Any], *, secret: str | None = None, memo: bool = False) -> Ask:
        async def parse() -> tuple[ParsedRequest, Mapping[str, bytes]]:
            catalog, default = self.settings.catalog, self.settings.default_model
            return parse_generation(dict(body), catalog, default_model=default), {}

        raw: Callable[[], Awaitable[bytes]] = _bytes(repr(sorted(body.items())).encode())
        return Ask(
            f"Bearer {secret}" if secret else None, parse, request_id="req-1",
            memo=("/v1/images/generations", "http://test", raw) if memo else None,
        )  # fmt: skip


def _bytes(data: bytes) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        return data

    return read


@pytest.fixture
def rig(settings: Settings, clock: ManualClock) -> Rig:
    return Rig(replace(settings, cache=replace(settings.cache, memory_mb=8)), clock)


async def test_a_denied_request_emits_denied_and_touches_no_store_or_ledger(rig: Rig) -> None:
    await rig.keys.create(KeyRecord("web", "growth", 0.0, models=("gpt-image-1",)), SECRET)
    with pytest.raises(InvalidRequest) as raised:
        await rig.service.handle(rig.ask({"prompt": "a kite", "model": "dall-e-3"}, secret=SECRET))
    assert raised.value.code == "model_not_allowed"
    assert rig.hook.of(Denied) == [Denied("model")]
    assert rig.hook.of(CacheLookedUp) == []
    assert {call.split(".")[0] for call in rig.calls} == {"keys"}  # authentication only
    assert rig.provider.calls == []


async def test_a_memo_hit_records_one_hit_row_and_one_lookup(rig: Rig) -> None:
    body = {"prompt": "a kite", "model": "gpt-image-1-mini"}
    miss = await rig.service.handle(rig.ask(body, memo=True))
    assert isinstance(miss, Answered) and miss.served.outcome.value == "MISS"
    hit = await rig.service.handle(rig.ask(body, memo=True))  # through the stores
    assert isinstance(hit, Answered) and hit.served.outcome.value == "HIT"
    rig.service.remember(hit, {"X-Cache": "HIT"}, b'{"created":7,"data":[]}', 7)
    before, seen = len(rig.calls), len(rig.hook.events)

    repeat = await rig.service.handle(rig.ask(body, memo=True))

    assert isinstance(repeat, Repeated)
    assert repeat.answer.body(9) == b'{"created":9,"data":[]}'
    assert rig.calls[before:] == []  # no store read: the memo answered
    assert rig.hook.events[seen:] == [CacheLookedUp("hit")]
    await rig.service.accounts.flush_hits()
    hits = [r for r in rig.ledger._rows if r.cache == "HIT"]
    assert [(r.requests, r.images, r.cost_micros) for r in hits] == [(2, 2, 0)]
    assert {r.request_key for r in hits} == {hit.served.key}
    assert len(rig.provider.calls) == 1


async def test_a_miss_reserves_generates_stores_then_settles_under_its_flight_lock(
    rig: Rig,
) -> None:
    answered = await rig.service.handle(rig.ask({"prompt": "a kite", "model": "gpt-image-1-mini"}))
    assert isinstance(answered, Answered) and answered.served.outcome.value == "MISS"
    order = [
        c for c in rig.calls
        if c in ("flights.acquire", "ledger.reserve", "blobs.put", "entries.put",
                 "ledger.settle", "flights.release")
    ]  # fmt: skip
    assert order == [
        "flights.acquire", "ledger.reserve", "blobs.put", "entries.put", "ledger.settle",
        "flights.release",
    ]  # fmt: skip
    assert "ledger.release" not in rig.calls
    assert rig.hook.of(CacheLookedUp) == [CacheLookedUp("miss")]
    assert [(c.model, c.cost_micros) for c in rig.hook.of(Charged)] == [
        (answered.served.model, answered.served.cost_micros)
    ]
    assert len(rig.provider.calls) == 1
