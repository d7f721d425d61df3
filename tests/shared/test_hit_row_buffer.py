"""Hit rows while PostgreSQL is away: kept in memory, at most `UNWRITTEN_AT_MOST`, the
oldest dropped past it (and said so), and written when it answers again. A real ledger
behind a loopback TCP proxy that is cut, not a ledger that pretends to fail."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from proxy.accounts import UNWRITTEN_AT_MOST, Accounts
from proxy.config_cost import parse_cost
from proxy.observability.events import BackendFailed, Events, ListHook
from proxy.stores.backend_errors import BackendUnavailable
from proxy.stores.postgres import open_postgres
from tests.backends.postgres import postgres_database
from tests.shared.backends import on_port
from tests.shared.tcp_proxy import TcpProxy


async def test_hit_rows_wait_for_postgres_bounded_and_oldest_dropped_first() -> None:
    async with postgres_database() as dsn, TcpProxy(5432) as proxy:
        stores = await open_postgres(on_port(dsn, proxy.port))
        hook = ListHook()
        accounts = Accounts(stores.ledger, parse_cost({}), Events([hook]), lambda: 100.0)
        try:
            extra = 5
            for i in range(UNWRITTEN_AT_MOST + extra):  # one row per distinct request key
                accounts.hits.add(100.0, "web", None, f"{i:064x}", "m", "p", 1, 0, "HIT", None)
            await proxy.cut()
            with pytest.raises(BackendUnavailable):
                await accounts.flush_hits()
            dropped = [e for e in hook.of(BackendFailed) if e.what == "ledger.flush"]
            assert [e.error for e in dropped] == [
                f"{extra} hit rows dropped: the ledger is unreachable"
            ]
            await proxy.restore()
            await accounts.flush_hits()
        finally:
            await stores.close()
        conn = await asyncpg.connect(dsn)
        try:
            keys = {r[0] for r in await conn.fetch("SELECT request_key FROM ledger")}
        finally:
            await conn.close()
    assert len(keys) == UNWRITTEN_AT_MOST
    assert f"{0:064x}" not in keys and f"{extra - 1:064x}" not in keys  # the oldest went
    assert f"{extra:064x}" in keys and f"{UNWRITTEN_AT_MOST + extra - 1:064x}" in keys


async def test_the_flusher_backs_off_while_postgres_is_away_and_resumes_after() -> None:
    """One retry (and one error line) every 0.25, 0.5, 1 ... 8 s, not four a second; the
    first flush that succeeds goes back to the interval and writes the rows kept."""
    async with postgres_database() as dsn, TcpProxy(5432) as proxy:
        stores = await open_postgres(on_port(dsn, proxy.port))
        hook = ListHook()
        accounts = Accounts(stores.ledger, parse_cost({}), Events([hook]), lambda: 100.0)
        waits: list[float] = []

        async def sleep(seconds: float) -> None:  # the flusher's clock: no real waiting
            waits.append(seconds)
            if len(waits) == 1:
                accounts.hits.add(100.0, "web", None, "a" * 64, "m", "p", 1, 0, "HIT", None)
                await proxy.cut()
            elif len(waits) == 8:
                await proxy.restore()
            elif len(waits) == 10:
                raise asyncio.CancelledError

        try:
            with pytest.raises(asyncio.CancelledError):
                await accounts.run_flusher(0.25, sleep)
        finally:
            await stores.close()
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetchval("SELECT COUNT(*) FROM ledger")
        finally:
            await conn.close()
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 0.25, 0.25]
    assert len([e for e in hook.of(BackendFailed) if e.what == "ledger.flush"]) == 7
    assert rows == 1
