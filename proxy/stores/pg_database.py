"""One PostgreSQL database behind a pool, and the one place its connection errors are mapped.

Every adapter of `proxy.stores.pg_*` borrows its connections here. A server that cannot be
reached (refused, reset, shut down, timed out, out of connection slots) surfaces as
`BackendUnavailable("postgres", ...)` whatever the method, so the service can answer 503
naming the backend instead of a 500; every other database error is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from proxy.stores.backend_errors import BackendUnavailable

__all__ = ["BACKEND", "UNREACHABLE", "PgDatabase", "unreachable"]

BACKEND: Final = "postgres"
# What a server that is down, restarting or full looks like from asyncpg.
UNREACHABLE: Final[tuple[type[BaseException], ...]] = (
    OSError,  # refused, reset, no route, DNS
    TimeoutError,  # connect or command timeout
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections
    asyncpg.exceptions.ConnectionDoesNotExistError,  # the server went away mid-query
)


def unreachable(exc: BaseException) -> BackendUnavailable:
    """The `BackendUnavailable` for one of `UNREACHABLE` (never the DSN: it may hold a
    password)."""
    return BackendUnavailable(BACKEND, f"{type(exc).__name__}: {exc}".rstrip(": "))


class PgDatabase:
    """`await PgDatabase.connect(dsn)`: a pool of `min_size`..`max_size` connections.

    `min_size=0` opens connections only when first used (a pool that can be made while the
    server is down; its first call raises `BackendUnavailable`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ) -> PgDatabase:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                server_settings={"application_name": "imagegate"},  # pg_stat_activity
            )
        except UNREACHABLE as exc:
            raise unreachable(exc) from exc
        return cls(pool)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PoolConnectionProxy]:
        """A connection of the pool, outside any transaction (each statement commits)."""
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except UNREACHABLE as exc:
            raise unreachable(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PoolConnectionProxy]:
        """A connection in a READ COMMITTED transaction, committed when the block ends."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        await self._pool.close()
