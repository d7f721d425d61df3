"""PostgreSQL that cannot be reached: every adapter method says so as
`BackendUnavailable("postgres", ...)` (the service's 503 naming it), never a raw asyncpg or
socket error; opening the stores at start fails the same way."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from policies.budget import BudgetSpec
from policies.ledger_models import KeyRecord, LedgerRow
from proxy.stores.backend_errors import BackendUnavailable
from proxy.stores.experiments import Experiment
from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_experiments import PgExperimentStore
from proxy.stores.pg_keys import PgKeyStore
from proxy.stores.pg_ledger import PgLedger
from proxy.stores.pg_reports import PgCircuitHolds, PgLedgerReports
from proxy.stores.pg_schema import migrate
from proxy.stores.postgres import open_postgres

NOW = 1_700_000_000.0
SPEC = BudgetSpec("global", "", 1_000, "day")
ROW = LedgerRow(NOW, "web", None, "k" * 64, "gpt-image-1", "openai", 1, 0, 10, "HIT")


def _dead_dsn() -> str:
    """A DSN whose port nothing listens on (bound once to find a free one, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/imagegate"


@pytest.fixture
async def down() -> AsyncIterator[PgDatabase]:
    db = await PgDatabase.connect(_dead_dsn(), min_size=0, connect_timeout=2)
    yield db
    await db.close()


def _calls(db: PgDatabase) -> dict[str, Callable[[], Awaitable[object]]]:
    keys, ledger = PgKeyStore(db), PgLedger(db)
    reports, holds, experiments = PgLedgerReports(db), PgCircuitHolds(db), PgExperimentStore(db)
    return {
        "migrate": lambda: migrate(db),
        "keys.create": lambda: keys.create(KeyRecord("web", None, NOW), "sk-web"),
        "keys.find": lambda: keys.find("sk-web"),
        "keys.sync_config": lambda: keys.sync_config([], NOW),
        "ledger.reserve": lambda: ledger.reserve([SPEC], 10, NOW, "me"),
        "ledger.settle": lambda: ledger.settle("r", ROW),
        "ledger.resolve_orphans": lambda: ledger.resolve_orphans("me", NOW, 60),
        "ledger.record": lambda: ledger.record([ROW]),
        "ledger.budget_left": lambda: ledger.budget_left([SPEC], NOW),
        "reports.totals": lambda: reports.totals(),
        "reports.refund": lambda: reports.refund(1),
        "holds.holds": lambda: holds.holds(),
        "experiments.create": lambda: experiments.create(Experiment("x", NOW, ()), {}),
        "experiments.impress": lambda: experiments.impress("x", "s", "a", NOW),
    }


async def test_every_call_names_postgres_when_it_is_down(down: PgDatabase) -> None:
    for name, call in _calls(down).items():
        with pytest.raises(BackendUnavailable) as caught:
            await call()
        assert caught.value.backend == "postgres", name
        assert caught.value.detail, name
        assert "postgresql://" not in str(caught.value), name  # never the DSN


async def test_opening_the_stores_fails_at_once_naming_postgres() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        await open_postgres(_dead_dsn())
    assert caught.value.backend == "postgres"
    assert str(caught.value).startswith("postgres is unavailable: ")
