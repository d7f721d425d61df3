"""Schema migrations of the PostgreSQL stores, shipped in the package and applied at start.

The migrations are the `NNNN_name.sql` files of `proxy/stores/pg_migrations/`, applied in
order, each in its own transaction together with its row in `schema_migrations`. Replicas
that start together all call `migrate`: a session-level `pg_advisory_lock` lets one apply
while the others wait, then find nothing left to do. A migration once shipped is never
edited; a change is a new file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from proxy.stores.pg_database import PgDatabase

__all__ = ["MIGRATIONS_LOCK", "Migration", "migrate", "migrations"]

# The advisory lock key every replica takes around `migrate` (any constant of our own).
MIGRATIONS_LOCK: Final = 0x1A6E_6A7E_0001
_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
  version integer PRIMARY KEY, name text NOT NULL, applied double precision NOT NULL)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped in the package, in order."""
    folder = files("proxy.stores").joinpath("pg_migrations")
    found = [
        Migration(int(entry.name.split("_", 1)[0]), entry.name, entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda m: m.version)


async def migrate(db: PgDatabase) -> list[int]:
    """Apply the migrations this database lacks; the versions this call applied (none when
    another replica applied them first, or on a second run)."""
    applied: list[int] = []
    async with db.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK)
        try:
            await conn.execute(_TABLE)
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        time.time(),
                    )
                applied.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK)
    return applied
