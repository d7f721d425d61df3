"""Shared mode when a backend goes away while the gateway runs, on the real servers: each
backend is reached through a loopback TCP proxy that the test cuts (connections reset, new
ones refused) and restores. Nothing shared is stopped, nothing is mocked.

Decided (and held here): PostgreSQL down -> misses 503 before any upstream call (no spending
without a reservation), hits served, their rows kept and written when it returns; Redis down
-> 503 for image requests (entries, rate limits and flights live there); S3 down -> misses
503 before spending, hits of images this replica holds in memory still served. Always:
`/readyz` 503 naming what is down, `/healthz` 200, every backend call in the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import openai
import pytest

from proxy.stores.build import open_stores
from tests.conftest import CountingProvider, Gateway, ManualClock, start_gateway
from tests.shared.backends import SharedBackends
from tests.shared.tcp_proxy import TcpProxy

SECRET = "sk-failures-0123456789abcdef"
ADMIN = "admin-failures-0123456789abcdef"
KEYS = f"""
[auth]
admin_key = "{ADMIN}"
[[keys]]
name = "web"
key = "{SECRET}"
"""


@dataclass
class Cut:
    gateway: Gateway
    redis: TcpProxy
    postgres: TcpProxy
    s3: TcpProxy
    client: openai.AsyncOpenAI


@pytest.fixture
async def cut(shared: SharedBackends, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Cut]:
    """A gateway (in this process) whose three backends each sit behind a `TcpProxy`."""
    s3_port = urlsplit(shared.s3.endpoint_url).port
    assert s3_port is not None
    async with TcpProxy(6379) as redis, TcpProxy(5432) as postgres, TcpProxy(s3_port) as s3:
        moved = shared.moved(redis=redis.port, postgres=postgres.port, s3=s3.port)
        settings = moved.settings(tmp_path, KEYS)
        stores = await open_stores(settings)
        gateway = await start_gateway(settings, CountingProvider(), clock, stores=stores)
        client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=SECRET, max_retries=0)
        gateway.clients.append(client)
        try:
            yield Cut(gateway, redis, postgres, s3, client)
        finally:
            for proxy in (redis, postgres, s3):
                if proxy.port and not proxy.listening:
                    await proxy.restore()
            await gateway.close()


async def generate(client: openai.AsyncOpenAI, prompt: str, **kw: Any) -> str:
    raw = await client.images.with_raw_response.generate(
        model="gpt-image-1-mini", prompt=prompt, **kw
    )
    raw.parse()
    return raw.headers["x-cache"]


async def probe(gateway: Gateway, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(gateway.root + path) as got:
        return got.status, await got.json()


async def refused(client: openai.AsyncOpenAI, prompt: str, backend: str) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        await generate(client, prompt)
    error = info.value
    assert error.status_code == 503 and error.code == "backend_unavailable"
    assert f"its {backend} backend" in error.message and "operator should check" in error.message
    assert error.response.headers["x-should-retry"] == "true"


async def test_postgres_down_refuses_misses_before_spending_and_serves_hits(
    cut: Cut, shared: SharedBackends, clock: ManualClock
) -> None:
    gw = cut.gateway
    assert await generate(cut.client, "a lantern") == "MISS"
    await cut.postgres.cut()
    clock.advance(5)  # the key cache's second is long past: keys are read again
    assert await generate(cut.client, "a lantern") == "HIT"
    assert await generate(cut.client, "a lantern", response_format="url") == "HIT"
    calls = len(gw.provider.calls)
    await refused(cut.client, "a lantern in fog", "postgres")
    assert len(gw.provider.calls) == calls  # nothing was sent upstream
    assert await probe(gw, "/healthz") == (200, {"status": "ok"})
    status, body = await probe(gw, "/readyz")
    assert status == 503 and set(body["stores"]) == {"postgres"}
    assert errors_of(await scrape(gw), "postgres") >= 1  # /metrics answers meanwhile
    await cut.postgres.restore()
    assert await wait_for_rows(shared.dsn, "SELECT SUM(requests) FROM ledger WHERE cache = 'HIT'")
    assert (await probe(gw, "/readyz"))[0] == 200
    assert await generate(cut.client, "a lantern in fog") == "MISS"
    metrics = await scrape(gw)
    assert errors_of(metrics, "postgres") >= 1
    assert 'backend="postgres",le="+Inf",operation="ledger.reserve"' in metrics


def errors_of(metrics: str, backend: str) -> float:
    line = f'imagegate_backend_errors_total{{backend="{backend}"}} '
    found = [row for row in metrics.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


async def wait_for_rows(dsn: str, sql: str, want: int = 2, within: float = 30) -> bool:
    """The buffered hit rows reach the ledger once PostgreSQL answers again."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        conn = await asyncpg.connect(dsn)
        try:
            if (await conn.fetchval(sql) or 0) >= want:
                return True
        finally:
            await conn.close()
        await asyncio.sleep(0.2)
    return False


async def scrape(gateway: Gateway) -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.root + "/metrics", headers=headers) as got:
            assert got.status == 200
            return await got.text()


async def test_redis_down_is_a_503_naming_it_until_it_returns(cut: Cut) -> None:
    gw = cut.gateway
    assert await generate(cut.client, "a compass") == "MISS"
    await cut.redis.cut()
    await refused(cut.client, "a compass", "redis")
    assert (await probe(gw, "/healthz"))[0] == 200
    status, body = await probe(gw, "/readyz")
    assert status == 503 and set(body["stores"]) == {"redis"}
    await cut.redis.restore()
    assert await generate(cut.client, "a compass") == "HIT"
    assert (await probe(gw, "/readyz"))[0] == 200


async def test_s3_down_refuses_misses_before_spending_and_serves_hits_from_memory(
    cut: Cut,
) -> None:
    gw = cut.gateway
    assert await generate(cut.client, "a kestrel") == "MISS"
    await cut.s3.cut()
    assert await generate(cut.client, "a kestrel") == "HIT"  # its bytes are in memory
    calls = len(gw.provider.calls)
    await refused(cut.client, "a kestrel at noon", "s3")
    assert len(gw.provider.calls) == calls
    status, body = await probe(gw, "/readyz")
    assert status == 503 and set(body["stores"]) == {"s3"}
    await cut.s3.restore()
    assert await generate(cut.client, "a kestrel at noon") == "MISS"
    assert (await probe(gw, "/readyz"))[0] == 200
