"""A fresh PostgreSQL database per test, on the server of this machine (127.0.0.1:5432,
user postgres, trust auth; `IMAGEGATE_TEST_POSTGRES` names another server's admin DSN).

Each test's database is cloned from a template that is made and migrated once per test
process (`CREATE DATABASE … TEMPLATE`), then dropped after the test. Measured on this
machine, 20 rounds each, interleaved: a clone took a median 187 ms to create, open, migrate
(a no-op) and drop, a fresh database migrated each time 219 ms (mean 199 vs 312 ms). The
template is dropped when the process exits.

Use `async with postgres_database() as dsn:` or `async with postgres_stores() as stores:`
from an async fixture or test; when the server cannot be reached the test is skipped with a
reason that says how to start it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import asyncpg
import pytest

from proxy.stores.owners import OwnerState
from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_schema import migrate
from proxy.stores.postgres import PgStores, open_postgres

__all__ = ["ADMIN_DSN", "dsn_of", "postgres_database", "postgres_stores"]

ADMIN_DSN: Final = os.environ.get(
    "IMAGEGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_HOW_TO_START: Final = (
    "PostgreSQL is not reachable at {dsn} ({error}); start it with `.ci/run` (it starts an "
    "installed PostgreSQL) or `pg_ctlcluster 15 main start`, or point IMAGEGATE_TEST_POSTGRES "
    "at a server's admin DSN (trust auth, a user that may CREATE DATABASE)"
)
_template: list[str] = []  # this process's migrated template database, once made


def dsn_of(database: str) -> str:
    """The admin DSN pointed at another database of the same server."""
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(_HOW_TO_START.format(dsn=ADMIN_DSN, error=exc))


def _drop_template() -> None:
    async def drop() -> None:
        admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{_template[0]}"')
        finally:
            await admin.close()

    asyncio.run(drop())


async def _ensure_template(admin: asyncpg.Connection) -> str:
    if not _template:
        name = f"imagegate_test_template_{uuid.uuid4().hex}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        _template.append(name)
        atexit.register(_drop_template)
        db = await PgDatabase.connect(dsn_of(name), min_size=1, max_size=1)
        try:
            await migrate(db)
        finally:
            await db.close()
    return _template[0]


@asynccontextmanager
async def postgres_database(*, migrated: bool = True) -> AsyncIterator[str]:
    """The DSN of a new database of its own (migrated unless told not), dropped afterwards."""
    admin = await _admin()
    name = f"imagegate_test_{uuid.uuid4().hex}"
    try:
        template = await _ensure_template(admin) if migrated else "template1"
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        try:
            yield dsn_of(name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def postgres_stores(
    state: Callable[[str], OwnerState] | None = None,
) -> AsyncIterator[PgStores]:
    """Every PostgreSQL adapter over a database of its own (`state`: see `PgLedger`)."""
    async with postgres_database() as dsn:
        stores = await open_postgres(dsn, state=state)
        try:
            yield stores
        finally:
            await stores.close()
