"""Three replicas on one shared config behave, to any client, as one gateway (issue 14):
real `imagegate serve` processes on real Redis, PostgreSQL and S3 (moto's server), driven
with the openai SDK, over a fake Replicate that counts its predictions."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import openai
import pytest

from tests.fakes.replicate_server import FakeReplicate
from tests.shared.backends import SharedBackends
from tests.shared.replicas import ADMIN, SECRET, Replica, start_replicas, stop_replicas

MODEL = {"model": "flux-schnell", "size": "256x256"}  # $0.003 an image, quoted as billed
Cluster = Callable[..., Awaitable[list[Replica]]]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate(api_token="r8_shared") as fake:
        yield fake


@pytest.fixture
async def cluster(
    shared: SharedBackends, upstream: FakeReplicate, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """`await cluster(key="budget_usd = 0.01", lease_seconds=3)`: three replicas of one
    config whose `[[keys]]` entry for SECRET has the extra `key` lines."""
    started: list[Replica] = []

    async def start(
        key: str = "", lease_seconds: float = 40, count: int = 3, workers: int = 1
    ) -> list[Replica]:
        extra = f"""
[auth]
admin_key = "{ADMIN}"
[providers.replicate]
api_token = "r8_shared"
base_url = "{upstream.base_url}"
[[keys]]
name = "web"
key = "{SECRET}"
team = "growth"
{key}
"""
        config = tmp_path / "shared.toml"
        config.write_text(shared.toml(extra, lease_seconds=lease_seconds))
        started.extend(await start_replicas(config, tmp_path, count, workers))
        return started

    yield start
    await stop_replicas(started)


async def generate(replica: Replica, prompt: str, **kw: Any) -> tuple[dict[str, str], Any]:
    raw = await replica.client().images.with_raw_response.generate(prompt=prompt, **MODEL, **kw)
    return dict(raw.headers), raw.parse()


async def ledger(shared: SharedBackends, sql: str) -> Any:
    conn = await asyncpg.connect(shared.dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_a_miss_on_one_replica_is_a_hit_on_the_others(
    cluster: Cluster, upstream: FakeReplicate
) -> None:
    a, b, c = await cluster()
    made, first = await generate(a, "a lighthouse at dusk", response_format="b64_json")
    assert made["x-cache"] == "MISS"
    for replica in (b, c):
        headers, again = await generate(replica, "a lighthouse at dusk", response_format="b64_json")
        assert headers["x-cache"] == "HIT" and headers["x-imagegate-cost-usd"] == "0"
        assert headers["x-cache-key"] == made["x-cache-key"]
        assert again.data[0].b64_json == first.data[0].b64_json
    # url mode: the URL A answers with is served by C (the blob is in S3, not on A's disk)
    made, linked = await generate(a, "a harbour at dawn", response_format="url")
    path = "/images/" + linked.data[0].url.rsplit("/images/", 1)[1]
    headers, again = await generate(b, "a harbour at dawn", response_format="url")
    assert headers["x-cache"] == "HIT" and again.data[0].url.endswith(path)
    async with aiohttp.ClientSession() as http, http.get(c.root + path) as got:
        assert got.status == 200 and got.headers["ETag"] == f'"{path[8:72]}"'
        assert "immutable" in got.headers["Cache-Control"]
        assert hashlib.sha256(await got.read()).hexdigest() == path[8:72]
    assert len(upstream.predictions) == 2


async def test_concurrent_misses_across_replicas_charge_exactly_the_budget(
    cluster: Cluster, upstream: FakeReplicate, shared: SharedBackends
) -> None:
    """300 distinct misses at once, spread over three replicas; the key's budget fits 12."""
    replicas = await cluster(key='budget_usd = 0.036\nbudget_window = "day"')
    results = await asyncio.gather(
        *(generate(replicas[i % 3], f"kite number {i}") for i in range(300)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    denied = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(ok), len(denied)) == (12, 288), [r for r in results if isinstance(r, Exception)][:3]
    assert {e.code for e in denied} == {"insufficient_quota"}
    assert len(upstream.predictions) == 12
    charged = sum(round(Decimal(h["x-imagegate-cost-usd"]) * 1_000_000) for h, _ in ok)
    assert charged == 36_000
    assert await ledger(shared, "SELECT SUM(cost_micros) FROM ledger") == 36_000
    assert await ledger(shared, "SELECT COUNT(*) FROM reservations") == 0


async def test_replicas_of_two_workers_each_behave_as_one_gateway(
    cluster: Cluster, upstream: FakeReplicate, shared: SharedBackends
) -> None:
    """`--workers 2` on shared mode: four processes, one gateway. Identical misses spread
    over every worker make one call; distinct ones stop at the key's budget; a hit anywhere."""
    a, b = await cluster(key='budget_usd = 0.009\nbudget_window = "day"', count=2, workers=2)
    upstream.work_seconds = 1.0
    same = await asyncio.gather(*(generate((a, b)[i % 2], "twin owls") for i in range(24)))
    assert len(upstream.predictions) == 1
    assert len({answer.data[0].b64_json for _, answer in same}) == 1
    distinct = await asyncio.gather(
        *(generate((a, b)[i % 2], f"owl number {i}") for i in range(8)), return_exceptions=True
    )
    ok = [r for r in distinct if not isinstance(r, BaseException)]
    assert len(ok) == 2  # $0.009: the twin owls ($0.003) and two more
    assert all(isinstance(r, openai.RateLimitError) for r in distinct if r not in ok)
    assert await ledger(shared, "SELECT SUM(cost_micros) FROM ledger") == 9_000
    assert await ledger(shared, "SELECT COUNT(*) FROM reservations") == 0
    headers, _ = await generate(b, "twin owls")
    assert headers["x-cache"] == "HIT"


async def test_identical_misses_across_replicas_make_one_upstream_call(
    cluster: Cluster, upstream: FakeReplicate
) -> None:
    replicas = await cluster()
    upstream.work_seconds = 1.0  # every request arrives while the first is in flight
    results = await asyncio.gather(
        *(generate(replicas[i % 3], "fifty identical foxes") for i in range(50))
    )
    assert len(upstream.predictions) == 1
    outcomes = [headers["x-cache"] for headers, _ in results]
    assert outcomes.count("MISS") == 1 and set(outcomes) <= {"MISS", "COALESCED", "HIT"}
    assert len({answer.data[0].b64_json for _, answer in results}) == 1


async def test_a_keys_rate_limit_holds_across_replicas(cluster: Cluster) -> None:
    """2 a minute (a token every 30 s: none comes back while the test runs); one bucket per
    replica would let 6 of the 9 through."""
    replicas = await cluster(key="requests_per_minute = 2")
    results = await asyncio.gather(
        *(generate(replicas[i % 3], "a rate-limited owl") for i in range(9)),
        return_exceptions=True,
    )
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(limited) == 7 and {e.code for e in limited} == {"rate_limit_exceeded"}
    assert sum(not isinstance(r, BaseException) for r in results) == 2


async def _refused_within(seconds: float, attempt: Callable[[], Awaitable[object]]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await attempt()
        except openai.AuthenticationError:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_key_made_or_revoked_on_one_replica_holds_on_all_within_2_s(
    cluster: Cluster,
) -> None:
    """Made on A with the admin API, revoked on B with `imagegate keys revoke`."""
    a, b, c = await cluster()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(a.root + "/admin/keys", headers=admin, json={"name": "late"}) as made:
            assert made.status == 201
            late = (await made.json())["key"]
        # Made on A: B takes it at once (an unknown key is never cached as refused).
        headers, _ = await generate_as(b, late, "a late key's swan")
        assert headers["x-cache"] == "MISS"
        await generate_as(c, late, "a late key's swan")  # C now holds it in its key cache
    # Revoked on B with the CLI an operator would use.
    revoke = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "keys", "revoke", "late", "--base-url", b.root,
        "--admin-key", ADMIN, stdout=asyncio.subprocess.DEVNULL, env=_cli_env(),
    )  # fmt: skip
    assert await revoke.wait() == 0
    assert await _refused_within(2.0, lambda: generate_as(c, late, "a late key's swan"))


def _cli_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")} | {
        "PYTHONPATH": root
    }


async def generate_as(replica: Replica, key: str, prompt: str) -> tuple[dict[str, str], Any]:
    raw = await replica.client(key).images.with_raw_response.generate(prompt=prompt, **MODEL)
    return dict(raw.headers), raw.parse()


async def test_kill_9_mid_miss_frees_its_budget_and_its_flight(
    cluster: Cluster, upstream: FakeReplicate, shared: SharedBackends
) -> None:
    """A dies holding a reservation and the flight of a request B waits on: B takes the
    flight over once A's lease lapses, and A's reservation is settled as ORPHANED at its
    quote (the upstream may have billed it): nothing stays reserved."""
    a, b, _ = await cluster(lease_seconds=3)
    upstream.work_seconds = 60.0  # A's call is still upstream when A dies
    dying = asyncio.create_task(generate(a, "a slow glacier"))
    while not upstream.predictions:
        await asyncio.sleep(0.05)
    waiter = asyncio.create_task(generate(b, "a slow glacier"))
    await asyncio.sleep(0.5)  # B reaches the flight lock A holds
    assert await ledger(shared, "SELECT COUNT(*) FROM reservations") == 1
    upstream.work_seconds = 0.0
    a.kill()
    with pytest.raises(openai.APIConnectionError):
        await dying
    headers, answer = await waiter
    assert headers["x-cache"] == "MISS" and answer.data[0].b64_json
    assert len(upstream.predictions) == 2
    deadline = time.monotonic() + 30
    while await ledger(shared, "SELECT COUNT(*) FROM reservations"):
        assert time.monotonic() < deadline, "A's reservation was never resolved"
        await asyncio.sleep(0.2)
    orphaned = await ledger(shared, "SELECT SUM(cost_micros) FROM ledger WHERE cache = 'ORPHANED'")
    assert orphaned == 3_000
