"""A `redis.asyncio.Redis` client for shared mode, and the one place its errors are mapped.

The client has no retries of its own (retries are our policy and show in our metrics) and
bounded connect and read timeouts, so a Redis that is down or stalled fails a request in
seconds with `BackendUnavailable("redis", ...)` instead of hanging it. The Redis adapters
(`redis_entries`, `redis_limits`, `redis_flights`) wrap every call in `redis_unavailable`.

Deployment: one standalone Redis (or a Sentinel-managed primary). The scripts touch
several keys of one prefix, so Redis Cluster is not supported. A `maxmemory-policy` that
evicts keys (allkeys-*) would silently drop rate-limit buckets and flight leases: run
with `noeviction` (or `volatile-*`, which evicts only keys with a TTL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.stores.backend_errors import BackendUnavailable

__all__ = ["DEFAULT_TIMEOUT", "POOL_SIZE", "connect_redis", "redis_client", "redis_unavailable"]

DEFAULT_TIMEOUT: Final = 5.0  # seconds to connect, and to wait for one reply
# Connections one replica keeps at most. Past them a command waits for a free one (up to the
# reply timeout) instead of failing: a burst of hundreds of concurrent requests queues here
# rather than answering 503s (redis-py's default pool raises "Too many connections").
POOL_SIZE: Final = 100


def redis_client(url: str, *, reply_timeout: float = DEFAULT_TIMEOUT) -> Redis:
    """A client for `url` (`redis://[user:password@]host:port/db`, `rediss://`, `unix://`);
    it connects on first use. Replies stay bytes: entries are JSON, decoded by the caller."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=reply_timeout,  # the longest a command waits for a free connection
        socket_connect_timeout=reply_timeout,
        socket_timeout=reply_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,  # a pooled connection idle this long is checked first
    )
    return Redis.from_pool(pool)  # the client owns the pool: `aclose` closes both


async def connect_redis(url: str, *, reply_timeout: float = DEFAULT_TIMEOUT) -> Redis:
    """`redis_client(url)`, pinged: raises `BackendUnavailable` (and closes the client)
    when Redis cannot be reached, so a replica fails at start with one line naming it."""
    client = redis_client(url, reply_timeout=reply_timeout)
    try:
        with redis_unavailable(client):
            await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


def redis_address(client: Redis) -> str:
    """host:port (or the socket path) of `client`: never the URL, which may hold a password."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextmanager
def redis_unavailable(client: Redis) -> Iterator[None]:
    """Map a connection failure or timeout to `BackendUnavailable("redis", ...)`."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        detail = f"Redis at {redis_address(client)} did not answer ({exc}); is it running?"
        raise BackendUnavailable("redis", detail) from exc
