"""`imagegate migrate` from an embedded install to shared mode (real Redis, PostgreSQL and an
S3 server) and back: nothing is lost either way, budgets on PostgreSQL count what the
embedded ledger spent, and a second run copies nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from policies.budget import BudgetSpec
from proxy.stores.ledger import SqliteLedger
from proxy.stores.postgres import open_postgres
from tests.backends.postgres import postgres_database
from tests.backends.redis import redis_backend  # noqa: F401  # the fixture
from tests.proxy.migration.test_migrate_command import (
    NOW,
    _cache_view,
    _config,
    _experiment_view,
    _fill_cache,
    _fill_experiments,
    _fill_ledger,
    _ledger_view,
    env,  # noqa: F401  # the fixture
    migrate,
    summary,
)

BUDGETS = [BudgetSpec(s, n, 10**9, w) for s, n in (("global", ""), ("team", "red"),
           ("key", "web")) for w in ("day", "month", "total")]  # fmt: skip


def _shared_config(tmp: Path, dsn: str, redis, s3) -> None:
    (tmp / "shared.toml").write_text(
        '[storage]\nbackend = "shared"\n'
        f'[redis]\nurl = "{redis.url}"\nprefix = "{redis.prefix}"\n'
        f'[postgres]\ndsn = "{dsn}"\n'
        f'[s3]\nendpoint_url = "{s3.endpoint_url}"\nbucket = "{s3.bucket}"\n'
        f'prefix = "{s3.prefix}"\nregion = "{s3.region}"\n'
        f'access_key_id = "{s3.access_key_id}"\nsecret_access_key = "{s3.secret_access_key}"\n'
    )


async def _budgets_on_postgres(dsn: str) -> object:
    stores = await open_postgres(dsn, max_size=1)
    try:
        return await stores.ledger.budget_left(BUDGETS, NOW)
    finally:
        await stores.close()


async def test_embedded_to_shared_and_back_loses_nothing(tmp_path, env, redis_backend, s3_settings):  # noqa: F811
    _config(tmp_path, "old", "old-data")
    _config(tmp_path, "back", "back-data")
    _fill_cache(tmp_path / "old-data", 40)
    _fill_ledger(tmp_path / "old-data/ledger.sqlite3")
    _fill_experiments(tmp_path / "old-data/experiments.sqlite3")
    async with postgres_database() as dsn:
        _shared_config(tmp_path, dsn, redis_backend, s3_settings)

        there = await asyncio.to_thread(
            migrate, tmp_path, env, "--from", "old.toml", "--to", "shared.toml"
        )
        assert there.returncode == 0, there.stderr
        copied = summary(there.stdout)
        assert copied["blobs (images)"][0] == copied["cache entries"][0] == 40
        assert copied["ledger rows"][0] == 304 and copied["API keys"][0] == 2
        embedded = SqliteLedger(tmp_path / "old-data/ledger.sqlite3")
        try:
            assert await _budgets_on_postgres(dsn) == embedded.budget_left(BUDGETS, NOW)
        finally:
            embedded.close()

        back = await asyncio.to_thread(
            migrate, tmp_path, env, "--from", "shared.toml", "--to", "back.toml"
        )
        assert back.returncode == 0, back.stderr
        again = await asyncio.to_thread(
            migrate, tmp_path, env, "--from", "old.toml", "--to", "shared.toml"
        )
        assert again.returncode == 0, again.stderr
        assert all(c == 0 for c, _, _ in summary(again.stdout).values()), again.stdout

    old, returned = tmp_path / "old-data", tmp_path / "back-data"
    assert _cache_view(old) == _cache_view(returned)
    assert _ledger_view(old / "ledger.sqlite3") == _ledger_view(returned / "ledger.sqlite3")
    assert _experiment_view(old / "experiments.sqlite3") == _experiment_view(
        returned / "experiments.sqlite3"
    )
