"""Schema migrations on PostgreSQL: shipped in the package, applied once however many
replicas start together."""

from __future__ import annotations

import asyncio

from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_schema import migrate, migrations
from tests.backends.postgres import postgres_database


def test_the_migrations_ship_in_the_package_in_order() -> None:
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "0001_init.sql"
    assert "CREATE TABLE budget_usage" in found[0].sql


async def test_replicas_starting_together_apply_each_migration_once() -> None:
    async with postgres_database(migrated=False) as dsn:
        pools = [await PgDatabase.connect(dsn, min_size=1, max_size=1) for _ in range(5)]
        try:
            applied = await asyncio.gather(*(migrate(db) for db in pools))
            assert sorted(v for one in applied for v in one) == [m.version for m in migrations()]
            assert sum(1 for one in applied if one) == 1  # one replica did all the work
            assert await migrate(pools[0]) == []  # a second start: nothing left to do
            async with pools[0].connection() as conn:
                rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
                tables = await conn.fetchval(
                    "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename IN ('api_keys', 'budget_usage', 'ledger', 'reservations')"
                )
            assert [r[0] for r in rows] == [m.version for m in migrations()]
            assert tables == 4
        finally:
            for db in pools:
                await db.close()
