"""The shell's logic emits what happened and touches no metric or logger: the real generator,
router, request middleware, reservation sweeper and connection guard, observed through a
ListHook."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace
from types import SimpleNamespace

import pytest
from aiohttp import web

from policies.circuit import Breaker
from policies.errors import ProviderError, ProviderRejected, ProviderUnavailable
from policies.normalize import parse_generation
from proxy.app_keys import CACHE_OUTCOME, LOG_FIELDS, SERVICE, STORES
from proxy.config import Settings
from proxy.connection_guard import ConnectionGuard
from proxy.generation import Generator
from proxy.middlewares import _completed, request_middleware
from proxy.observability.events import (
    CircuitChanged,
    ClientTimedOut,
    ErrorAnswered,
    Events,
    FellBack,
    ListHook,
    OverQuoted,
    ProviderCalled,
    RequestCompleted,
    RequestFailed,
    ReservationOrphaned,
)
from proxy.providers.registry import ProviderRegistry
from proxy.reservation_sweeper import ReservationSweeper
from proxy.router import Router
from tests.conftest import CountingProvider, ManualClock, PricedProvider, ledger_of
from tests.proxy.test_orphans import BUDGET, ELSEWHERE, draft

GEN = "/v1/images/generations"


# -- the real generator and router, observed ----------------------------------------------


class Budget:
    """Every reservation fits and releases are counted; nothing is cut off in these tests."""

    def __init__(self) -> None:
        self.reserved: list[tuple[int, str, str]] = []
        self.released = 0

    async def reserve(self, amount_micros: int, model: str, provider: str) -> str | None:
        self.reserved.append((amount_micros, model, provider))
        return f"r{len(self.reserved)}"

    async def release(self, reservation: str | None) -> None:
        self.released += 1

    async def abandon(self, reservation: str | None) -> None:
        raise AssertionError("nothing is cut off here")


def routed(provider: CountingProvider, hook: ListHook, **router: object) -> Generator:
    events = Events((hook,))
    settings = Settings()
    route = Router(
        catalog=settings.catalog,
        registry=ProviderRegistry({provider.name: provider}),
        events=events,
        clock=ManualClock(),
        **router,
    )
    return Generator(route, events)


def plan(generator: Generator, model: str) -> tuple[object, ...]:
    settings = Settings()
    parsed = parse_generation(
        {"model": model, "prompt": "a red fox", "size": "1024x1024"},
        settings.catalog,
        default_model=settings.default_model,
    )
    return generator.router.plan(parsed.request, images=1)


async def test_a_fallback_emits_the_failed_call_then_fell_back_then_the_call_that_served() -> None:
    hook = ListHook()
    provider = PricedProvider(name="replicate", fail_next=[ProviderError("it broke")])
    generator = routed(provider, hook)
    candidates = plan(generator, "art")
    budget = Budget()
    made, _ = await generator.make(candidates, (0,), {}, budget)

    first, second = candidates[0].spec.name, made.model
    assert first == "flux-schnell" and second != first
    kinds = [type(e).__name__ for e in hook.events if not isinstance(e, CircuitChanged)]
    assert kinds == ["ProviderCalled", "FellBack", "ProviderCalled"]
    failed, served = hook.of(ProviderCalled)
    assert (failed.model, failed.outcome, failed.attempt, failed.error) == (
        first, "upstream_error", 1, "it broke",
    )  # fmt: skip
    assert hook.of(FellBack) == [FellBack(first, second, "replicate")]
    assert (served.model, served.outcome, served.attempt, served.images) == (second, "ok", 2, 1)
    assert served.cost_micros == made.cost_micros > 0
    assert budget.released == 1
    assert hook.of(OverQuoted) == []


async def test_a_refused_request_does_not_fall_back() -> None:
    hook = ListHook()
    provider = CountingProvider(name="replicate", fail_next=[ProviderRejected("not allowed")])
    generator = routed(provider, hook)
    with pytest.raises(ProviderRejected):
        await generator.make(plan(generator, "art"), (0,), {}, Budget())
    assert [e.outcome for e in hook.of(ProviderCalled)] == ["upstream_rejected"]
    assert hook.of(FellBack) == []


async def test_a_bill_beyond_the_quote_is_over_quoted() -> None:
    hook = ListHook()

    class Overbilling(CountingProvider):
        async def generate(self, call):
            result = await super().generate(call)
            return replace(result, cost_micros=99_000_000)

    generator = routed(Overbilling(name="replicate"), hook)
    candidates = plan(generator, "flux-dev")
    made, _ = await generator.make(candidates, (0,), {}, Budget())
    quote = candidates[0].quote_micros
    assert hook.of(OverQuoted) == [OverQuoted("replicate", "flux-dev", quote, 99_000_000)]
    assert made.cost_micros == quote


def test_a_circuit_opening_emits_once_per_change() -> None:
    hook = ListHook()
    router = routed(CountingProvider(name="replicate"), hook, breaker=Breaker(threshold=2)).router
    router.record("flux-dev", ok=True)
    router.record("flux-dev", ok=True)  # still closed: no event
    router.record("flux-dev", ok=False)  # one failure of two: still closed
    router.record("flux-dev", ok=False)
    assert hook.of(CircuitChanged) == [
        CircuitChanged("flux-dev", 0.0),
        CircuitChanged("flux-dev", 1.0),
    ]


def test_holds_and_resets_always_emit_and_a_held_circuit_stays_open() -> None:
    hook = ListHook()
    router = routed(CountingProvider(name="replicate"), hook).router
    router.hold("gpt-image-1.5", "billed beyond its quote")
    router.record("gpt-image-1.5", ok=True)  # a call that was in flight when it was held
    router.reset("gpt-image-1.5")
    router.reset("gpt-image-1.5")
    assert hook.of(CircuitChanged) == [
        CircuitChanged("gpt-image-1.5", 1.0),
        CircuitChanged("gpt-image-1.5", 0.0),
        CircuitChanged("gpt-image-1.5", 0.0),
    ]


# -- the request middleware ----------------------------------------------------------------


async def _hit(request: web.Request) -> web.Response:
    request[CACHE_OUTCOME] = "HIT"
    request[LOG_FIELDS] = {"key": "sk-abc", "model": "gpt-image-1"}
    return web.json_response({"data": []})


async def _unavailable(request: web.Request) -> web.Response:
    raise ProviderUnavailable("Every model is down.")


async def _bug(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


@pytest.fixture
async def served(aiohttp_client):
    hook = ListHook()
    app = web.Application(middlewares=[request_middleware(Events((hook,)))])
    app.router.add_post(GEN, _hit)
    app.router.add_post("/v1/images/edits", _unavailable)
    app.router.add_get("/boom", _bug)
    return await aiohttp_client(app), hook


async def test_each_request_is_one_request_completed(served) -> None:
    client, hook = served
    got = await client.post(GEN, headers={"X-Request-Id": "req_abcdefgh"})
    assert got.status == 200
    [done] = hook.events
    assert isinstance(done, RequestCompleted)
    assert (done.route, done.method, done.status, done.cache, done.request_id) == (
        GEN, "POST", 200, "hit", "req_abcdefgh",
    )  # fmt: skip
    assert done.fields == {"key": "sk-abc", "model": "gpt-image-1"} and done.seconds >= 0


def test_the_middlewares_request_completed_is_the_dataclasss_own() -> None:
    values = (GEN, "POST", 200, "hit", 0.25, {"key": "sk-abc"}, "req_1")
    made = _completed(*values)
    assert made == RequestCompleted(*values) and type(made) is RequestCompleted
    assert [getattr(made, f.name) for f in fields(RequestCompleted)] == list(values)
    with pytest.raises(FrozenInstanceError):
        made.status = 500  # type: ignore[misc]


async def test_an_error_is_answered_and_emitted_as_it_renders(served) -> None:
    client, hook = served
    got = await client.post("/v1/images/edits")
    assert got.status == 503
    assert (await got.json())["error"]["message"] == "Every model is down."
    assert hook.events[0] == ErrorAnswered(503, "upstream_unavailable", "Every model is down.")
    assert isinstance(hook.events[1], RequestCompleted) and hook.events[1].cache == "none"

    got = await client.get("/nowhere")
    assert got.status == 404
    assert [e.status for e in hook.of(ErrorAnswered)] == [503, 404]
    assert hook.of(RequestCompleted)[-1].route == "unmatched"


async def test_a_bug_is_a_500_with_its_exception_emitted(served) -> None:
    client, hook = served
    got = await client.get("/boom")
    assert got.status == 500
    assert "RuntimeError" not in await got.text()
    failed, answered, done = hook.events
    assert isinstance(failed, RequestFailed) and failed.path == "/boom"
    assert isinstance(failed.exception, RuntimeError)
    assert answered == ErrorAnswered(
        500, None, "The gateway had an error while processing your request."
    )
    assert isinstance(done, RequestCompleted) and done.status == 500


# -- the reservation sweeper and the connection guard --------------------------------------


async def test_an_orphan_settled_by_the_sweeper_is_emitted(gateway, clock) -> None:
    hook = ListHook()
    stores, service = gateway.app[STORES], gateway.app[SERVICE]
    sweeper = ReservationSweeper(
        stores.ledger, stores.holds, service.router, clock, service.accounts.owner,
        Events((hook,)),
    )  # fmt: skip
    ledger = ledger_of(gateway.app)  # another process's reservation, planted in the file
    ledger.heartbeat(ELSEWHERE, clock.now)
    ledger.reserve([BUDGET], 25_000, clock.now, ELSEWHERE, draft(0))
    clock.advance(41)  # past the 40 s lease
    [row] = await sweeper.sweep()
    assert hook.events == [
        ReservationOrphaned("flux-dev", "web-app", 25_000, "replicate", "req-lost-in-flight")
    ]
    assert row.cost_micros == 25_000


class _Connection:
    """What the guard reads of aiohttp's RequestHandler, for a client that sent nothing."""

    def __init__(self) -> None:
        self.transport = object()
        self._request_count = 0
        self.closed = False

    def force_close(self) -> None:
        self.closed = True


def test_a_connection_without_headers_in_time_is_closed_and_emitted() -> None:
    hook = ListHook()
    conn = _Connection()
    server = SimpleNamespace(connections=[conn])
    guard = ConnectionGuard(server, 1.0, 5.0, Events((hook,)))
    guard.sweep(100.0)
    guard.sweep(101.0)  # exactly the deadline: still open
    assert not conn.closed and hook.events == []
    guard.sweep(101.5)
    assert conn.closed
    assert hook.events == [ClientTimedOut("header", 1.0)]
