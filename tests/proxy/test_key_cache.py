"""Keys are read from the ledger at most once a second, and never make requests queue."""

from __future__ import annotations

import time

import aiohttp

from policies.ledger_models import KeyRecord
from proxy.stores.ledger import SqliteLedger
from tests.conftest import PricedProvider, start_gateway
from tests.proxy.test_cost_control import ADMIN, SECRET, key, with_cost

BODY = {"model": "flux-schnell", "prompt": "a kite", "size": "1024x1024"}


async def post(gw, body=BODY, secret=""):
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.base_url + "/images/generations", json=body, headers=headers) as r:
            return r.status, await r.json()


async def test_a_key_made_by_another_process_closes_the_gateway_within_a_second(settings, clock):
    gw = await start_gateway(settings, PricedProvider(), clock, serves_as="replicate")
    try:
        assert (await post(gw))[0] == 200  # open: no keys yet
        other = SqliteLedger(settings.data_dir / "ledger.sqlite3")  # `imagegate keys create`
        other.create_key(
            KeyRecord(name="cli", team=None, created=clock.now), "sk-cli-0123456789abcd"
        )
        other.close()
        assert (await post(gw))[0] == 200  # still within the second it trusts
        clock.advance(1.5)
        # Late requests may be served by the stale answer only while the one refresh they
        # started runs (a thread's read of the ledger: milliseconds, more on a loaded
        # machine); once it lands, every request must authenticate.
        statuses = [(await post(gw))[0]]
        deadline = time.monotonic() + 10
        while statuses[-1] == 200 and time.monotonic() < deadline:
            statuses.append((await post(gw))[0])
        assert statuses[-1] == 401
        assert [(await post(gw))[0] for _ in range(10)] == [401] * 10
    finally:
        await gw.close()


async def test_a_raised_budget_applies_to_the_next_request(settings, clock):
    settings = with_cost(settings, auth={"admin_key": ADMIN}, keys=[key(budget_usd=0.003)])
    gw = await start_gateway(settings, PricedProvider(), clock, serves_as="replicate")
    try:
        assert (await post(gw, secret=SECRET))[0] == 200  # $0.003 spent: the whole budget
        status, body = await post(gw, {**BODY, "prompt": "another"}, secret=SECRET)
        assert status == 429 and body["error"]["code"] == "insufficient_quota"
        async with aiohttp.ClientSession() as http:
            async with http.put(
                gw.root + "/admin/keys/web-app/budget",
                headers={"Authorization": f"Bearer {ADMIN}"},
                json={"budget_usd": 1.0},
            ) as raised:
                assert raised.status == 200
        assert (await post(gw, {**BODY, "prompt": "another"}, secret=SECRET))[0] == 200
    finally:
        await gw.close()


async def test_the_known_caller_is_what_authenticate_decides(tmp_path):
    """The hit path's shortcut answers only what `authenticate` would; otherwise None."""
    from proxy.authentication import Authenticator
    from proxy.observability.events import Events
    from proxy.stores.embedded import SqliteKeyStore

    now = [1000.0]
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    gate = Authenticator(SqliteKeyStore(ledger), Events(), lambda: now[0])
    bearer = f"Bearer {SECRET}"
    try:
        assert gate.known_caller(None) is None  # never read: authenticate reads
        open_caller = await gate.authenticate(None)
        assert gate.known_caller(None) == open_caller == gate.known_caller(bearer)
        ledger.create_key(KeyRecord(name="web", team="growth", created=now[0]), SECRET)
        gate.forget_key_cache()  # as the admin API does
        assert gate.known_caller(bearer) is None
        caller = await gate.authenticate(bearer)
        assert (caller.name, caller.scope) == ("web", "growth")
        assert gate.known_caller(bearer) == caller
        assert gate.known_caller(None) is None  # no key given: authenticate refuses it
        assert gate.known_caller("Bearer sk-not-a-key-000000000000") is None
        now[0] += 1.5  # a second later: read again
        assert gate.known_caller(bearer) is None
    finally:
        ledger.close()
