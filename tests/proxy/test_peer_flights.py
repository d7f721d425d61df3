"""Two workers over one set of stores (as `serve --workers 2` shares the data dir and the
flight lock): a request whose lookup came before a peer's flight landed takes the peer's
images once it holds the key's lock, and never regenerates (which would replace images
already answered: the crash loop's "changed images", RELIABILITY.md). The interleaving is
driven step by step: worker B's lookup, worker A's whole request, then B's fill."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies.cache import CacheDirectives, LookupPlan, parse_cache_control, plan_lookup
from policies.models import Entry, ParsedRequest
from policies.normalize import parse_generation, request_key
from proxy.assembly import build_registry, build_service
from proxy.authentication import OPEN
from proxy.config import Settings
from proxy.misses import Job, ServedImage
from proxy.observability.events import Events
from proxy.service import ImageService
from tests.conftest import ManualClock
from tests.proxy.test_driver import Rig


class Workers:
    """Worker A (the rig's service) and worker B: its own driver and in-process flights,
    the same stores and flight lock."""

    def __init__(self, settings: Settings, clock: ManualClock) -> None:
        self.clock = clock
        self.rig = Rig(settings, clock)
        registry = build_registry(settings, {"placeholder": self.rig.provider})
        self.b: ImageService = build_service(
            settings, settings.catalog, self.rig.stores, registry, Events([]), clock
        )
        body = {"prompt": "a kite", "model": "gpt-image-1-mini", "n": 2}
        default = settings.default_model
        self.parsed: ParsedRequest = parse_generation(body, settings.catalog, default_model=default)
        self.key = request_key(self.parsed.request, OPEN.scope)

    async def stored(self) -> list[Entry | None]:
        return [await self.rig.stores.entries.get(self.key, i) for i in range(2)]

    async def look_up(self, directives: CacheDirectives) -> LookupPlan:
        """Worker B's lookup step (the driver's, over the same stores)."""
        return plan_lookup(await self.stored(), directives, now=self.clock())

    async def a_answers(self, directives: CacheDirectives) -> list[Entry]:
        served = await self.rig.service.serve(self.parsed, {}, directives, caller=OPEN)
        return [image.entry for image in served.images]

    async def b_fills(
        self, plan: LookupPlan, directives: CacheDirectives
    ) -> tuple[tuple[int, int, int], list[Entry]]:
        job = Job(self.key, self.parsed, {}, directives, OPEN, "req-b")
        images = {i: ServedImage(entry, None) for i, entry in plan.cached.items()}
        counts = await self.b.misses.fill(job, plan, images, self.b.record)
        return counts, [images[i].entry for i in range(2)]


@pytest.fixture
def workers(settings: Settings, clock: ManualClock) -> Workers:
    return Workers(replace(settings, cache=replace(settings.cache, memory_mb=8)), clock)


async def test_a_flight_landed_after_the_lookup_is_taken_not_regenerated(workers: Workers):
    none = parse_cache_control(None)
    plan = await workers.look_up(none)  # B: nothing stored yet
    assert plan.missing == (0, 1)
    answered = await workers.a_answers(none)  # A: a miss, stored, answered
    workers.clock.advance(1)  # B's flight takes off after A's entries were stamped

    counts, got = await workers.b_fills(plan, none)

    assert counts == (0, 2, 0)  # (generated, coalesced, cost): both were A's
    assert got == answered
    assert await workers.stored() == answered  # what A's client was answered is still stored
    assert len(workers.rig.provider.calls) == 1


async def test_a_lookup_between_a_peers_two_entry_writes_takes_the_second(workers: Workers):
    """A peer writes index 0, then index 1: a lookup between the two sees index 0 cached and
    index 1 missing, so its flight generates index 1 alone (at position 0 of its upstream
    call: another picture). Once it holds the lock it must take the peer's index 1."""
    none = parse_cache_control(None)
    answered = await workers.a_answers(none)
    plan = plan_lookup([answered[0], None], none, now=workers.clock())  # B, mid-write
    assert plan.missing == (1,)
    workers.clock.advance(1)

    counts, _ = await workers.b_fills(plan, none)

    assert counts == (0, 1, 0)
    assert await workers.stored() == answered
    assert len(workers.rig.provider.calls) == 1


async def test_a_stale_entry_is_replaced_unless_a_peer_replaced_it_first(workers: Workers):
    """The other side of the rule: an entry too old for the request's max-age is the one it
    regenerates, and a peer's fresh one (also made after the lookup) is taken instead."""
    old = await workers.a_answers(parse_cache_control(None))
    workers.clock.advance(100)
    strict = parse_cache_control("max-age=10")
    plan = await workers.look_up(strict)
    assert plan.missing == (0, 1) and plan.stale == dict(enumerate(old))

    counts, renewed = await workers.b_fills(plan, strict)  # no peer: B regenerates
    assert counts[0] == 2
    assert [entry.created for entry in renewed] == [old[0].created + 100] * 2
    assert await workers.stored() == renewed

    workers.clock.advance(100)
    plan = await workers.look_up(strict)
    peer = await workers.a_answers(strict)  # A regenerates after B's lookup
    workers.clock.advance(1)
    counts, got = await workers.b_fills(plan, strict)
    assert counts == (0, 2, 0)
    assert got == peer == await workers.stored()
    assert len(workers.rig.provider.calls) == 3
