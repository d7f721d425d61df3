"""The real Redis the shared-mode tests run on: a fresh key prefix per test, deleted after.

`IMAGEGATE_TEST_REDIS_URL` overrides the server (default redis://127.0.0.1:6379/0). When it
cannot be reached, the Redis cases skip and say how to start it. Setup and cleanup use the
synchronous client, so any fixture (sync or async) can ask for a backend; the adapters
under test get their own `redis.asyncio` client on the test's event loop."""

from __future__ import annotations

import functools
import os
import uuid
from dataclasses import dataclass

import pytest
import redis

REDIS_URL = os.environ.get("IMAGEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_IT = (
    "start it with `redis-server --daemonize yes --save ''` (or run .ci/run, which starts it), "
    "or point IMAGEGATE_TEST_REDIS_URL at one"
)


@dataclass(frozen=True)
class RedisBackend:
    url: str
    prefix: str  # every key a test writes starts with it


@functools.cache
def _unreachable(url: str) -> str | None:
    """Why Redis at `url` cannot be used (None: it can); asked once per session."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        return f"Redis at {url} is not reachable ({exc}): {START_IT}"
    finally:
        client.close()
    return None


def keys_under(url: str, prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return list(client.scan_iter(match=f"{prefix}*", count=1_000))
    finally:
        client.close()


def open_redis_backend(request: pytest.FixtureRequest) -> RedisBackend:
    """A fresh prefix for this test (skip if Redis is down); its keys go when the caller's
    fixture is torn down."""
    reason = _unreachable(REDIS_URL)
    if reason is not None:
        pytest.skip(reason)
    backend = RedisBackend(REDIS_URL, f"imagegate-test:{uuid.uuid4().hex}:")
    request.addfinalizer(functools.partial(_delete_prefix, backend))
    return backend


def _delete_prefix(backend: RedisBackend) -> None:
    client = redis.Redis.from_url(backend.url)
    try:
        keys = list(client.scan_iter(match=f"{backend.prefix}*", count=1_000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_backend(request: pytest.FixtureRequest) -> RedisBackend:
    return open_redis_backend(request)
