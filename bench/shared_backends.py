"""Shared mode's three servers for one bench run, each the bench's own and removed after it:
a throwaway PostgreSQL database, a unique Redis prefix, and moto's S3 server (`python -m
moto.server`, a child of the bench) with a bucket. Also the reserve + settle round trip,
timed straight through the PostgreSQL Ledger adapter (`open_postgres(dsn)`)."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.load import percentile
from bench.procs import Procs, free_port, wait_http

__all__ = [
    "ADMIN_DSN",
    "SharedBackends",
    "reserve_settle_async_commit",
    "reserve_settle_rounds",
    "shared_config",
    "start_backends",
    "stop_backends",
]

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
S3_KEY, S3_SECRET = "imagegate-bench", "imagegate-bench-secret"


@dataclass(frozen=True, slots=True)
class SharedBackends:
    database: str
    prefix: str
    s3_endpoint: str
    bucket: str

    @property
    def dsn(self) -> str:
        return ADMIN_DSN.rsplit("/", 1)[0] + "/" + self.database


def shared_config(b: SharedBackends) -> str:
    """The `[redis]`, `[postgres]` and `[s3]` sections of DESIGN.md §6, for
    `write_config(extra=..., backend="shared")`."""
    return "\n".join(
        [
            "[redis]",
            f'url = "{REDIS_URL}"',
            f'prefix = "{b.prefix}"',
            "",
            "[postgres]",
            f'dsn = "{b.dsn}"',
            "",
            "[s3]",
            f'endpoint_url = "{b.s3_endpoint}"',
            f'bucket = "{b.bucket}"',
            'prefix = "blobs/"',
            'region = "us-east-1"',
            f'access_key_id = "{S3_KEY}"',
            f'secret_access_key = "{S3_SECRET}"',
            "",
        ]
    )


def _s3(endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped]  # moto's dependency; setup and cleanup only

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )


async def _admin_sql(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start_backends(procs: Procs) -> SharedBackends:
    """Database, prefix, moto and bucket; raises RuntimeError naming what is missing."""
    tag = secrets.token_hex(4)
    database = f"imagegate_bench_{tag}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{database}"'))
    port = free_port()
    child = procs.start(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(endpoint + "/", timeout=90, child=child)
    bucket = f"imagegate-bench-{tag}"
    _s3(endpoint).create_bucket(Bucket=bucket)
    return SharedBackends(database, f"imagegate-bench-{tag}:", endpoint, bucket)


async def _drop_redis(prefix: str) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        await client.aclose()


def redis_keys(prefix: str) -> int:
    """How many Redis keys start with `prefix` (shared mode wrote there, or it did not)."""

    async def count() -> int:
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        try:
            return len([k async for k in client.scan_iter(match=prefix + "*", count=1000)])
        finally:
            await client.aclose()

    return asyncio.run(count())


def stop_backends(b: SharedBackends) -> None:
    """Drop the database and the prefix's keys (moto stops with the bench's children)."""
    asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{b.database}" WITH (FORCE)'))
    asyncio.run(_drop_redis(b.prefix))


async def _rounds(dsn: str, rounds: int) -> dict[str, Any]:
    from policies.budget import BudgetSpec
    from policies.ledger_models import LedgerRow
    from proxy.stores.postgres import open_postgres

    stores = await open_postgres(dsn)
    budgets = [
        BudgetSpec("global", "global", 10**15, "total"),
        BudgetSpec("team", "bench", 10**15, "month"),
    ]
    took: list[float] = []
    try:
        for i in range(rounds):
            now = time.time()
            row = LedgerRow(
                now, "bench", "bench", f"rk{i}", "gpt-image-1.5", "openai", 1, 11_000, 0, "MISS"
            )
            t0 = time.perf_counter()
            rid = await stores.ledger.reserve(budgets, 11_000, now, "bench-owner", row)
            if not isinstance(rid, str):
                raise RuntimeError(f"reserve was denied: {rid}")
            await stores.ledger.settle(rid, row)
            took.append((time.perf_counter() - t0) * 1000)
    finally:
        await stores.close()
    return {
        "rounds": rounds,
        "p50_ms": round(percentile(took, 50), 2),
        "p99_ms": round(percentile(took, 99), 2),
        "max_ms": round(max(took), 2),
        "mean_ms": round(sum(took) / len(took), 2),
    }


async def _setting(name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


def reserve_settle_rounds(dsn: str, rounds: int = 1_000) -> dict[str, Any]:
    """`rounds` reserve-then-settle pairs through the PostgreSQL Ledger adapter, one after
    another (two budgets, as a keyed miss has: global and team); ms per pair. Also the
    server's `synchronous_commit`, which decides whether each commit waits for its WAL
    flush (fsync)."""
    out = asyncio.run(_rounds(dsn, rounds))
    out["synchronous_commit"] = asyncio.run(_setting("synchronous_commit"))
    out["fsync"] = asyncio.run(_setting("fsync"))
    return out


def reserve_settle_async_commit(b: SharedBackends, rounds: int = 1_000) -> dict[str, Any]:
    """The same rounds with `synchronous_commit = off` set on the run's throwaway database
    (not the adapter, not the server): commits no longer wait for the WAL flush, so a crash
    may lose the last few hundred ms of settled rows (never corrupt them)."""
    asyncio.run(_admin_sql(f'ALTER DATABASE "{b.database}" SET synchronous_commit = off'))
    out = asyncio.run(_rounds(b.dsn, rounds))
    out["synchronous_commit"] = "off (this database only)"
    return out
