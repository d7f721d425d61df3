"""The KeyStore contract, over every adapter: what a PostgreSQL KeyStore must also do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from policies.errors import InvalidRequest
from policies.ledger_models import KeyRecord
from proxy.ports import KeyStore
from proxy.stores.embedded import SqliteKeyStore
from proxy.stores.ledger import SqliteLedger
from proxy.stores.memory_state import MemoryKeyStore
from tests.backends.postgres import postgres_stores

NOW = 1_700_000_000.0
WEB = KeyRecord("web", "red", NOW, requests_per_minute=60)
CLI = KeyRecord("cli", None, NOW)


def _sqlite(tmp: Path) -> tuple[KeyStore, Callable[[], None]]:
    db = SqliteLedger(tmp / "ledger.sqlite3")
    return SqliteKeyStore(db), db.close


FACTORIES: dict[str, Callable[[Path], tuple[KeyStore, Callable[[], None]]]] = {
    "sqlite": _sqlite,
    "memory": lambda _: (MemoryKeyStore(), lambda: None),
}


@pytest.fixture(params=[*sorted(FACTORIES), "postgres"])
async def keys(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    if request.param == "postgres":
        async with postgres_stores() as stores:
            yield stores.keys
        return
    store, close = FACTORIES[request.param](tmp_path)
    yield store
    close()


async def test_a_key_is_found_by_its_secret_only(keys: KeyStore) -> None:
    await keys.create(WEB, "sk-web-secret")
    assert await keys.find("sk-web-secret") == WEB
    assert await keys.find("sk-web-secre") is None
    assert await keys.find("web") is None


async def test_a_taken_name_or_secret_is_refused(keys: KeyStore) -> None:
    await keys.create(WEB, "sk-web-secret")
    for record, secret, param in ((WEB, "sk-other", "name"), (CLI, "sk-web-secret", "secret")):
        with pytest.raises(InvalidRequest) as caught:
            await keys.create(record, secret)
        assert (caught.value.code, caught.value.param) == ("key_exists", param)
    assert [k.name for k in await keys.list()] == ["web"]


async def test_an_empty_secret_is_refused(keys: KeyStore) -> None:
    with pytest.raises(InvalidRequest):
        await keys.create(WEB, "")


async def test_revoked_keys_are_not_found_but_listed(keys: KeyStore) -> None:
    await keys.create(WEB, "sk-web")
    await keys.create(CLI, "sk-cli")
    assert await keys.revoke("web", NOW + 5)
    assert not await keys.revoke("web", NOW + 6)
    assert not await keys.revoke("nobody", NOW)
    assert await keys.find("sk-web") is None
    assert [(k.name, k.revoked) for k in await keys.list()] == [("cli", None), ("web", NOW + 5)]
    assert [k.name for k in await keys.list(include_revoked=False)] == ["cli"]


async def test_budgets_are_set_and_removed(keys: KeyStore) -> None:
    await keys.create(WEB, "sk-web")
    assert await keys.set_budget("web", 5_000_000, "month")
    found = await keys.find("sk-web")
    assert found is not None
    assert (found.budget_micros, found.budget_window) == (5_000_000, "month")
    assert await keys.set_budget("web", None, "day")
    found = await keys.find("sk-web")
    assert found is not None and found.budget_micros is None
    assert not await keys.set_budget("nobody", 1, "day")
    with pytest.raises(InvalidRequest):
        await keys.set_budget("web", -1, "day")


async def test_config_keys_follow_the_config(keys: KeyStore) -> None:
    await keys.create(CLI, "sk-cli")  # issued at run time: config never touches it
    assert await keys.sync_config([(WEB, "sk-web-1")], NOW) == 0
    later = KeyRecord("web", "blue", NOW + 100)
    assert await keys.sync_config([(later, "sk-web-2")], NOW + 100) == 0
    found = await keys.find("sk-web-2")
    assert found is not None
    assert (found.team, found.created, found.source) == ("blue", NOW, "config")
    assert await keys.find("sk-web-1") is None
    assert await keys.sync_config([], NOW + 200) == 1  # dropped from config: revoked
    assert await keys.find("sk-web-2") is None
    assert await keys.find("sk-cli") is not None
