"""Shared mode's stores (DESIGN.md §2 and §6): Redis for entries, rate limits and flights,
PostgreSQL for keys, the ledger, circuit holds and experiments, S3 for blobs behind a
memory tier.

`open_shared_stores` connects to and pings every backend, and migrates PostgreSQL (under an
advisory lock: replicas may start together), in that order. A backend it cannot reach
raises `CannotStart`, whose text is the one line `imagegate serve` prints before it exits
non-zero (the backend, its host and port, never a password).

Each replica owns its reservations under an id unique to its process (host, pid and a
random part: two containers may share a pid and a host name), heartbeats it every
`sweep_seconds` and settles the reservations of replicas silent for `[storage]
lease_seconds` (`proxy.reservation_sweeper`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar
from urllib.parse import urlsplit

import asyncpg

from proxy.config import Settings
from proxy.memory import B64Cache, BytesLRU
from proxy.ports import BlobStore
from proxy.stores.backend_errors import BackendUnavailable, CannotStart
from proxy.stores.backend_watch import BackendWatch
from proxy.stores.blob_memory import MemoryTierBlobStore
from proxy.stores.build import Closer, Stores
from proxy.stores.owners import process_owner
from proxy.stores.postgres import PgStores, open_postgres
from proxy.stores.redis_connection import redis_unavailable
from proxy.stores.redis_flights import DEFAULT_LEASE
from proxy.stores.redis_stores import RedisStores, open_redis_stores
from proxy.stores.s3_blobs import S3BlobStore, open_s3_blobs
from proxy.stores.s3_client import s3_location

__all__ = ["SpendGate", "open_shared_stores", "postgres_where", "redis_where"]

_T = TypeVar("_T")
_SWEEP_AT_MOST: Final = 5.0  # seconds between sweeps: a dead replica settles in lease + 5 s


def redis_where(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def postgres_where(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql") or not parts.netloc:
        return "the [postgres] dsn"
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


async def _open(backend: str, where: str, opening: Awaitable[_T]) -> _T:
    try:
        return await opening
    except BackendUnavailable as exc:
        raise CannotStart(backend, where, exc.detail) from None
    except asyncpg.PostgresError as exc:  # reached, but refused: no such database, bad login
        raise CannotStart(backend, where, f"{type(exc).__name__}: {exc}") from None


async def open_shared_stores(settings: Settings) -> Stores:
    """Every store on the shared backends of `settings`, each reached and checked."""
    lease = settings.storage.lease_seconds
    redis_url = settings.redis.url.reveal()
    s3 = s3_location(settings.s3)
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        redis = await _open(
            "redis",
            redis_where(redis_url),
            open_redis_stores(redis_url, settings.redis.prefix, lease=min(DEFAULT_LEASE, lease)),
        )
        closers.append(redis.aclose)
        dsn = settings.postgres.dsn.reveal()
        pg = await _open("postgres", postgres_where(dsn), open_postgres(dsn))
        closers.append(pg.close)
        blobs = await _open("s3", s3.where, open_s3_blobs(s3))
        closers.append(blobs.aclose)
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    memory = settings.cache.memory_mb * 1024 * 1024 // 4  # proxy.assembly.memo_bytes
    tier = (BytesLRU(memory), B64Cache(memory))
    return _stores(redis, pg, blobs, tier, lease, tuple(closers))


def _stores(
    redis: RedisStores,
    pg: PgStores,
    s3: S3BlobStore,
    memory: tuple[BytesLRU, B64Cache],
    lease: float,
    closers: tuple[Closer, ...],
) -> Stores:
    watch = BackendWatch()
    blobs = MemoryTierBlobStore(watch.timed(s3, "s3", "blobs"), *memory)
    return Stores(
        entries=watch.timed(redis.entries, "redis", "entries"),
        blobs=blobs,
        keys=watch.timed(pg.keys, "postgres", "keys"),
        ledger=watch.timed(pg.ledger, "postgres", "ledger"),
        reports=watch.timed(pg.reports, "postgres", "reports"),
        holds=watch.timed(pg.holds, "postgres", "holds"),
        limits=watch.timed(redis.limits, "redis", "limits"),
        flights=watch.timed(redis.flights, "redis", "flights"),
        experiments=watch.timed(pg.experiments, "postgres", "experiments"),
        closers=closers,
        owner=f"{process_owner()}:{secrets.token_hex(4)}",
        lease_seconds=lease,
        sweep_seconds=min(_SWEEP_AT_MOST, max(0.5, lease / 4)),
        backends=(
            ("redis", _timed_ping(watch, "redis", lambda: _ping_redis(redis))),
            ("postgres", _timed_ping(watch, "postgres", lambda: _ping_postgres(pg))),
            ("s3", _timed_ping(watch, "s3", s3.ping)),
        ),
        before_spending=SpendGate(blobs.inner).check,
        watch=watch,
    )


def _timed_ping(
    watch: BackendWatch, backend: str, ping: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def timed() -> None:
        await watch.call(backend, "ping", ping)

    return timed


async def _ping_redis(redis: RedisStores) -> None:
    with redis_unavailable(redis.client):
        await redis.client.ping()


async def _ping_postgres(pg: PgStores) -> None:
    async with pg.db.connection() as conn:
        await conn.fetchval("SELECT 1")


class SpendGate:
    """Before a miss reserves money: can the blob store take the images it will pay for?

    A miss pays upstream first and writes its images to S3 after, so an S3 that is down
    would turn every miss into money spent on images that cannot be kept. Each miss waits
    for a ping of S3 (one HeadBucket, far cheaper than a generation) that started no
    earlier than it did, or joins the one in flight: a burst of misses costs a few pings,
    not one each. While S3 fails, misses are refused with `BackendUnavailable` before any
    spending. (Redis and PostgreSQL need no such check: the flight lock and the
    reservation reach them before any spending.) S3 failing between the ping and the write
    still costs that one call: the answer is then 500 storage_failed, and it is charged."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._ping: asyncio.Task[None] | None = None

    async def check(self) -> None:
        ping = self._ping
        if ping is None or ping.done():
            ping = self._ping = asyncio.create_task(self._blobs.ping())
        await asyncio.shield(ping)
