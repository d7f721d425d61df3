"""The driver: one image request's whole way through the gateway, in order.

    authenticate -> memo (proxy.hot) -> parse -> admit (policies.admission) -> request rate
      -> lookup plan (policies.cache: Hit | Partial | Miss) -> [proxy.misses: route ->
      images rate -> reserve -> generate (single-flight) -> verify -> store -> settle]
      -> record the hit rows -> CacheLookedUp

Each decision comes back as a value and is dispatched here with `match`; each store is a
port (`proxy.ports`) awaited here or in `proxy.misses`. The memo of rendered answers is one
step of this sequence, not a second path: a repeat the memo answers and a request served
from the stores pass the same admission and are recorded as the same hit row. Routes parse,
call `handle`, and render what it returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, assert_never

from policies.admission import Admitted
from policies.admission import Denied as Refused
from policies.cache import (
    CacheDirectives,
    CacheOutcome,
    LookupPlan,
    fresh_until,
    outcome_of,
    parse_cache_control,
    plan_lookup,
)
from policies.catalog import Catalog
from policies.models import ParsedRequest
from policies.normalize import request_key
from policies.ratelimit import Allowed, Limited, Oversized
from proxy.accounts import Accounts
from proxy.admission import Admission, RateHeaders
from proxy.authentication import Authenticator, Caller
from proxy.generation import Generator
from proxy.hot import HotAnswer, HotAnswers, HotKey
from proxy.misses import Job, Misses, ServedImage
from proxy.observability.events import CacheLookedUp, Denied, Events
from proxy.router import Router
from proxy.stores.build import Stores

__all__ = [
    "Answered", "Ask", "ImageService", "Memo", "Parse", "Quoting", "Repeated", "Served",
    "ServedImage",
]  # fmt: skip

# The parse step: the request's body as the core's value, with its uploads (sha256 -> bytes).
Parse = Callable[[], Awaitable[tuple[ParsedRequest, Mapping[str, bytes]]]]
# Where the memo may answer: (route path, base URL for url mode, the raw body's reader).
Memo = tuple[str, str, Callable[[], Awaitable[bytes]]] | None
# What a hit reads of each image: the base64 its answer carries, or (url mode) that it exists.
Read = Literal["base64", "exists"]


@dataclass(frozen=True, slots=True)
class Ask:
    """One image request as its route read it (headers only: the body is read by `parse`,
    after authentication). `memo`: (route path, base URL, a body reader) when the memo may
    answer it (a JSON body, no Cache-Control, no dry run)."""

    authorization: str | None
    parse: Parse
    cache_control: str | None = None
    dry_run: Callable[[], bool] = bool  # asked after admission (a bad header is a 400 then)
    request_id: str = ""
    memo: Memo = None


@dataclass(frozen=True, slots=True)
class Served:
    key: str
    outcome: CacheOutcome
    images: tuple[ServedImage, ...]
    model: str
    provider: str
    cost_micros: int  # charged for this request: 0 unless it generated


@dataclass(frozen=True, slots=True)
class Repeated:
    """The memo answered: a rendered hit."""

    answer: HotAnswer
    rate: RateHeaders | None


@dataclass(frozen=True, slots=True)
class Quoting:
    """A dry run that passed admission: the route answers with a quote (`proxy.routes.quote`)."""

    caller: Caller
    parsed: ParsedRequest


@dataclass(frozen=True, slots=True)
class Answered:
    """Served from the stores or generated. `memo`: where the route's rendering of a hit is
    kept for the next identical request (`remember`)."""

    served: Served
    parsed: ParsedRequest
    rate: RateHeaders | None
    memo: HotKey | None


@dataclass
class ImageService:
    catalog: Catalog
    stores: Stores
    auth: Authenticator
    admission: Admission
    accounts: Accounts
    misses: Misses
    events: Events
    clock: Callable[[], float]
    hot: HotAnswers = field(default_factory=lambda: HotAnswers(0))
    ttl_seconds: float | None = None

    async def handle(self, ask: Ask) -> Repeated | Quoting | Answered:
        """The request's whole sequence; raises the GatewayError a client is answered with."""
        caller = self.auth.known_caller(ask.authorization) or await self.auth.authenticate(
            ask.authorization
        )
        memo: HotKey | None = None
        if ask.memo is not None and self.hot.enabled:
            path, base_url, body = ask.memo
            memo = (path, caller.scope, base_url, await body())
            answer = self.hot.get(memo, self.clock())
            if answer is not None:  # its prompt passed the policy when it was kept
                self._admit(caller, answer.requested_model, None)
                rate = await self._take_request(caller)
                self.accounts.count_hit(
                    caller, ask.request_id, answer.request_key, answer.model,
                    answer.provider, answer.images, answer.saved_micros,
                )  # fmt: skip
                self.events.emit(_HIT)
                return Repeated(answer, rate)
        parsed, uploads = await ask.parse()
        self._admit(caller, parsed.request.model, parsed.request.prompt)
        if ask.dry_run():  # a quote: no rate token, reservation or ledger row
            return Quoting(caller, parsed)
        directives = parse_cache_control(ask.cache_control)
        rate = await self._take_request(caller)  # hits count against the request limit too
        served = await self.serve(
            parsed, uploads, directives, caller=caller, request_id=ask.request_id,
            read="base64" if parsed.delivery.carries_images else "exists",
        )  # fmt: skip
        return Answered(served, parsed, rate, memo)

    def _admit(self, caller: Caller, model: str, prompt: str | None) -> None:
        match self.admission.decide(caller, model, prompt):
            case Admitted():
                return
            case Refused(reason, error):
                self.events.emit(Denied(reason))
                raise error
            case unknown:
                assert_never(unknown)

    async def _take_request(self, caller: Caller) -> RateHeaders | None:
        decision = await self.admission.take_request(caller)
        match decision:
            case None:
                return None
            case Allowed(remaining, limit, reset):
                return RateHeaders(limit, remaining, reset)
            case Limited():
                self.events.emit(Denied("rate_limit"))
                raise decision.error("requests")
            case Oversized():
                self.events.emit(Denied("rate_limit"))
                raise decision.error
            case _:
                assert_never(decision)

    async def serve(
        self,
        parsed: ParsedRequest,
        uploads: Mapping[str, bytes],
        directives: CacheDirectives,
        *,
        caller: Caller,
        request_id: str = "",
        read: Read = "base64",
    ) -> Served:
        """Lookup -> fill the misses -> record: the part after admission."""
        n = parsed.delivery.n
        job = Job(request_key(parsed.request, caller.scope), parsed, uploads, directives,
                  caller, request_id)  # fmt: skip
        plan, images = await self._lookup(job.key, n, directives, read)
        self.record(job, [images[i] for i in plan.cached], "HIT")
        generated, coalesced, cost = await self.misses.fill(job, plan, images, self.record)
        outcome = outcome_of(plan, directives, generated=generated, coalesced=coalesced)
        self.events.emit(CacheLookedUp(outcome.value.lower()))  # type: ignore[arg-type]
        ordered = tuple(images[i] for i in range(n))
        first = ordered[0].entry
        return Served(job.key, outcome, ordered, first.model, first.provider, cost)

    async def _lookup(
        self, key: str, n: int, directives: CacheDirectives, read: Read
    ) -> tuple[LookupPlan, dict[int, ServedImage]]:
        """Which indexes the cache serves, with what the answer needs of each image: its
        base64, as the blob store keeps it, or only that it exists (url mode).
        On the loop for the embedded stores: an indexed SQLite read and a page-cached file
        read cost less than the hand-off to a thread (bench/: 1.7x hit throughput)."""
        entries = self.stores.entries
        found = [None] * n if directives.no_cache else [await entries.get(key, i) for i in range(n)]
        now = self.clock()
        plan = plan_lookup(found, directives, now=now, ttl=self.ttl_seconds)
        images: dict[int, ServedImage] = {}
        for index, entry in plan.cached.items():
            if read == "base64":
                text = await self.stores.blobs.get_base64(entry.blob)
                present = text is not None
            else:
                text = None
                present = await self._blob_exists(entry.blob)
            if not present:
                await entries.delete(key, index)  # its blob is gone: a miss, not an error
                found[index] = None
                continue
            images[index] = ServedImage(entry, None, text)
        if len(images) < len(plan.cached):
            plan = plan_lookup(found, directives, now=now, ttl=self.ttl_seconds)
        return plan, images

    async def _blob_exists(self, sha256: str) -> bool:
        """Verified presence; a file-backed store answers without reading the bytes."""
        blobs = self.stores.blobs
        return await blobs.open(sha256) is not None or await blobs.get(sha256) is not None

    def record(self, job: Job, served: list[ServedImage], cache: str) -> None:
        """A hit row for images this request got without paying: what they saved (the
        memo's repeat counts the same row, `Accounts.count_hit`)."""
        if not served:
            return
        first = served[0].entry
        saved = sum(image.entry.cost_micros for image in served)
        self.accounts.count_hit(
            job.caller, job.request_id, job.key, first.model, first.provider, len(served),
            saved, cache,
        )  # fmt: skip

    def remembers(self, answered: Answered) -> bool:
        """Whether `remember` keeps this answer (a hit the memo may answer next time)."""
        return answered.memo is not None and answered.served.outcome is CacheOutcome.HIT

    def remember(
        self, answered: Answered, headers: Mapping[str, str], body: bytes, created: int
    ) -> None:
        """Keep a hit's rendered answer (a body starting with `{"created":<created>`) for
        the next identical request: the memo's own store step."""
        served, memo = answered.served, answered.memo
        if memo is None or not self.remembers(answered):
            return
        head = b'{"created":%d' % created
        assert body.startswith(head)
        entries = [image.entry for image in served.images]
        self.hot.put(memo, HotAnswer(
            request_key=served.key, requested_model=answered.parsed.request.model,
            model=served.model, provider=served.provider, images=len(entries),
            saved_micros=sum(entry.cost_micros for entry in entries),
            expires=fresh_until(entries, self.ttl_seconds), headers=headers,
            tail=body[len(head) :],
        ))  # fmt: skip

    @property
    def router(self) -> Router:
        return self.misses.router

    @property
    def generator(self) -> Generator:
        return self.misses.generator

    async def aclose(self) -> None:
        await self.misses.aclose()


_HIT = CacheLookedUp("hit")  # one value: the memo's hit path allocates no event
