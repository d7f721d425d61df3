"""The miss half of the driver (`proxy.service`): single-flight, route, images rate,
reserve, generate, verify, store, settle.

A generation runs as its own task, so a client that disconnects does not cancel the images
other waiters are coalesced onto. Identical misses in this process join one flight
(`proxy.flights`); across processes and replicas the `FlightLock` port makes the second
wait, then find the first one's images in the stores.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import assert_never

from policies.budget import format_usd, split_micros
from policies.cache import CacheDirectives, LookupPlan
from policies.catalog import Catalog
from policies.errors import GatewayError, ProviderError
from policies.ledger_models import LedgerRow
from policies.models import Entry, ParsedRequest
from policies.ratelimit import Allowed, Limited, Oversized
from proxy.accounts import Accounts, CallerBudget
from proxy.admission import Admission
from proxy.authentication import Caller
from proxy.flights import Flights, Landed
from proxy.generation import Generated, Generator
from proxy.observability.events import Denied, Events, StoreFailed
from proxy.router import Router
from proxy.stores.build import Stores

__all__ = ["Job", "Misses", "ServedImage"]

# A generation task's result: (cost, images by index, indexes generated here).
_Flight = asyncio.Task[tuple[int, dict[int, Landed], frozenset[int]]]


@dataclass(frozen=True, slots=True)
class ServedImage:
    entry: Entry
    data: bytes | None  # the image; None on a hit, where only what the answer needs is read
    b64: bytes | None = None  # its base64, read on a hit whose answer carries the image


@dataclass(frozen=True, slots=True)
class Job:
    """One request's miss work: what the flight owner needs to generate, charge and store."""

    key: str
    parsed: ParsedRequest
    uploads: Mapping[str, bytes]
    directives: CacheDirectives
    caller: Caller
    request_id: str

    def row(
        self, ts: float, model: str, provider: str, images: int, *, cost: int, saved: int,
        cache: str,
    ) -> LedgerRow:  # fmt: skip
        return LedgerRow(
            ts=ts, key_name=self.caller.name, team=self.caller.team, request_key=self.key,
            model=model, provider=provider, images=images, cost_micros=cost,
            saved_micros=saved, cache=cache, request_id=self.request_id or None,
        )  # fmt: skip


Record = Callable[[Job, list[ServedImage], str], None]  # the driver's hit-row step


@dataclass
class Misses:
    catalog: Catalog
    stores: Stores
    router: Router
    generator: Generator
    admission: Admission
    accounts: Accounts
    events: Events
    clock: Callable[[], float]
    ttl_seconds: float | None = None
    flights: Flights = field(default_factory=Flights)
    _tasks: set[_Flight] = field(default_factory=set)

    async def fill(
        self, job: Job, plan: LookupPlan, images: dict[int, ServedImage], record: Record
    ) -> tuple[int, int, int]:
        """Generate or join every missing index; return (generated, coalesced, cost)."""
        if not plan.missing:
            return 0, 0, 0
        waits: dict[int, asyncio.Future[Landed]] = {}
        if not job.directives.no_cache:
            for index in plan.missing:
                joined = self.flights.join(job.key, index)
                if joined is not None:
                    waits[index] = joined
        mine = tuple(i for i in plan.missing if i not in waits)
        cost = 0
        if mine:
            # Claim the flights before the first await, so a request arriving meanwhile joins.
            owned = self.flights.take_off(job.key, mine) if not job.directives.no_cache else {}
            stale = {i: plan.stale[i] for i in mine if i in plan.stale}
            task = asyncio.create_task(self._generate(job, mine, owned, stale))
            self._tasks.add(task)
            task.add_done_callback(_forget(self._tasks))
            cost, landed, made_here = await asyncio.shield(task)
            for index, item in landed.items():
                images[index] = ServedImage(item.entry, item.data, item.b64)
            # What another worker process made while this one waited for the key's lock.
            record(job, [images[i] for i in mine if i not in made_here], "COALESCED")
        joined_images = []
        for index, future in waits.items():
            item = await asyncio.shield(future)
            images[index] = ServedImage(item.entry, item.data, item.b64)
            joined_images.append(images[index])
        record(job, joined_images, "COALESCED")
        generated = len(made_here) if mine else 0
        return generated, len(waits) + len(mine) - generated, cost

    async def _generate(
        self,
        job: Job,
        indexes: tuple[int, ...],
        owned: Mapping[int, asyncio.Future[Landed]],
        stale: Mapping[int, Entry],
    ) -> tuple[int, dict[int, Landed], frozenset[int]]:
        """(cost, every index's images, the indexes generated here rather than by a peer).
        `stale`: what the lookup found at those indexes (too old to serve)."""
        try:
            hold = await self.stores.flights.acquire(job.key)
            landed_ok = False
            try:
                no_cache = job.directives.no_cache
                landed = {} if no_cache else await self._peer_made(job.key, indexes, stale)
                rest = tuple(i for i in indexes if i not in landed)
                cost, made = await self._charge_and_make(job, rest) if rest else (0, {})
                landed_ok = True
            finally:
                await self.stores.flights.release(hold, landed=landed_ok)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else ProviderError("generation cancelled")
            self.flights.crash(job.key, owned, error)
            raise
        landed.update(made)
        for index in owned:
            self.flights.land(job.key, index, landed[index])
        return cost, landed, frozenset(made)

    async def _peer_made(
        self, key: str, indexes: tuple[int, ...], stale: Mapping[int, Entry]
    ) -> dict[int, Landed]:
        """Entries another process (or an earlier flight of this one) stored since this
        request's lookup: any entry other than the one the lookup found (none, or `stale`).
        Not a timestamp: a peer stamps `created` before its write commits, and a lookup can
        miss a flight that lands before this one takes off; regenerating then would replace
        images already answered (RELIABILITY.md, crash loops)."""
        found: dict[int, Landed] = {}
        for index in indexes:
            entry = await self.stores.entries.get(key, index)
            if entry is None or entry == stale.get(index):
                continue
            data = await self.stores.blobs.get(entry.blob)
            if data is not None:
                found[index] = Landed(entry, data)
        return found

    async def _take_images(self, caller: Caller, count: int) -> None:
        decision = await self.admission.take_images(caller, count)
        match decision:
            case Allowed():
                return
            case Limited():
                self.events.emit(Denied("rate_limit"))
                raise decision.error("images")
            case Oversized():
                self.events.emit(Denied("rate_limit"))
                raise decision.error
            case _:
                assert_never(decision)

    async def _charge_and_make(
        self, job: Job, indexes: tuple[int, ...]
    ) -> tuple[int, dict[int, Landed]]:
        """Route, reserve the worst case on every budget, generate, store, settle."""
        request = job.parsed.request
        asked = self.catalog.resolve(request.model)
        cheap = asked.virtual and await self.accounts.under_pressure(job.caller)
        candidates = self.router.plan(request, images=len(indexes), cheap_only=cheap)
        await self.stores.before_spending()  # shared mode: S3 can keep what we pay for
        await self._take_images(job.caller, len(indexes))
        cache = "BYPASS" if job.directives.no_cache else "MISS"
        draft = job.row(self.clock(), "", "", len(indexes), cost=0, saved=0, cache=cache)
        budget = CallerBudget(self.accounts, job.caller, draft)
        made, reservation = await self.generator.make(candidates, indexes, job.uploads, budget)
        try:
            landed = await self._store(job, indexes, made, asked.rules.revises_prompt)
        except Exception as exc:
            self.events.emit(StoreFailed(job.key, made.model, repr(exc)))
            raise GatewayError(
                "The image was generated (and charged) but the gateway could not store it. "
                "Ask the gateway's operator to check its storage before retrying.",
                code="storage_failed",
            ) from exc
        finally:  # stored or not, the upstream was paid: the call is charged, never released
            row = job.row(self.clock(), made.model, made.provider, len(indexes),
                          cost=made.cost_micros, saved=0, cache=cache)  # fmt: skip
            await self.accounts.settle(
                reservation, replace(row, over_quote_micros=made.over_quote_micros)
            )
            if made.over_quote_micros:
                await self._hold_over_quote(made)
        return made.cost_micros, landed

    async def _hold_over_quote(self, made: Generated) -> None:
        """An upstream billed beyond the worst-case quote: stop the model until an operator
        looks (`POST /admin/circuits/{model}/reset`)."""
        reason = (
            f"{made.provider} billed ${format_usd(made.cost_micros + made.over_quote_micros)} "
            f"for a call quoted at ${format_usd(made.quote_micros)}; an operator resets it "
            f"with POST /admin/circuits/{made.model}/reset"
        )
        await self.stores.holds.hold_model(made.model, reason, self.clock())
        self.router.hold(made.model, reason)

    async def _store(
        self, job: Job, indexes: tuple[int, ...], made: Generated, revises: bool
    ) -> dict[int, Landed]:
        now = self.clock()
        costs = split_micros(made.cost_micros, len(indexes))
        carries_images = job.parsed.delivery.carries_images
        landed: dict[int, Landed] = {}
        for pos, index in enumerate(indexes):
            image = made.images[pos]
            revised = image.revised_prompt
            if revised is None and revises:
                revised = made.prompt  # DALL·E 3 clients expect the prompt that was drawn
            data = image.image.data
            blob = await self.stores.blobs.put(data)
            entry = Entry(
                blob=blob, format=job.parsed.request.output_format, width=image.image.width,
                height=image.image.height, model=made.model, provider=made.provider,
                cost_micros=costs[pos], created=now, revised_prompt=revised,
                prompt=job.parsed.request.prompt,
            )  # fmt: skip
            if not job.directives.no_store:
                await self.stores.entries.put(job.key, index, entry, ttl=self.ttl_seconds)
            # The answer's base64, encoded in a thread: a 2 MB image held the loop for ms.
            text = await asyncio.to_thread(base64.b64encode, data) if carries_images else None
            landed[index] = Landed(entry, data, text)
        return landed

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _forget(tasks: set[_Flight]) -> Callable[[_Flight], None]:
    def done(task: _Flight) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here; the awaiting request re-raises it

    return done
