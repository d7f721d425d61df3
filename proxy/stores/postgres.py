"""Shared mode's PostgreSQL stores, built from one DSN: `stores = await open_postgres(dsn)`.

Opening migrates the database (under an advisory lock: replicas may start together) and
raises `BackendUnavailable("postgres", ...)` when the server cannot be reached, so the
gateway can name it in a one-line error and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.stores.owners import OwnerState
from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_experiments import PgExperimentStore
from proxy.stores.pg_keys import PgKeyStore
from proxy.stores.pg_ledger import PgLedger
from proxy.stores.pg_reports import PgCircuitHolds, PgLedgerReports
from proxy.stores.pg_schema import migrate

__all__ = ["PgStores", "open_postgres"]


@dataclass(frozen=True, slots=True)
class PgStores:
    """The ports PostgreSQL serves in shared mode, over one pool; `await close()` at stop."""

    db: PgDatabase
    keys: PgKeyStore
    ledger: PgLedger
    reports: PgLedgerReports
    holds: PgCircuitHolds
    experiments: PgExperimentStore

    async def close(self) -> None:
        await self.db.close()


async def open_postgres(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    state: Callable[[str], OwnerState] | None = None,
) -> PgStores:
    """Connect, migrate, and build every PostgreSQL adapter over one pool.

    `state`: see `PgLedger` (default: the reservation lease alone judges an owner)."""
    db = await PgDatabase.connect(dsn, min_size=min_size, max_size=max_size)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    ledger = PgLedger(db) if state is None else PgLedger(db, state)
    return PgStores(
        db, PgKeyStore(db), ledger, PgLedgerReports(db), PgCircuitHolds(db),
        PgExperimentStore(db),
    )  # fmt: skip
