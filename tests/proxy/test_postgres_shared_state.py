"""Keys and experiments on PostgreSQL when replicas write at once: the unique constraints
decide (never a read before the write), and a config sync is all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from policies.abtest import Counts, Variant
from policies.errors import InvalidRequest
from policies.ledger_models import KeyRecord
from proxy.stores.experiments import Experiment, ImageVariant
from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_experiments import PgExperimentStore
from proxy.stores.pg_keys import PgKeyStore
from tests.backends.postgres import postgres_database

NOW = 1_700_000_000.0


@pytest.fixture
async def replicas() -> AsyncIterator[list[PgDatabase]]:
    async with postgres_database() as dsn:
        pools = [await PgDatabase.connect(dsn, min_size=1, max_size=3) for _ in range(3)]
        yield pools
        for db in pools:
            await db.close()


async def _create(keys: PgKeyStore, name: str, secret: str) -> str:
    try:
        await keys.create(KeyRecord(name, None, NOW), secret)
    except InvalidRequest as exc:
        return f"{exc.code}:{exc.param}"
    return "created"


async def test_one_of_many_replicas_creating_one_name_wins(replicas: list[PgDatabase]) -> None:
    stores = [PgKeyStore(db) for db in replicas]
    got = await asyncio.gather(
        *(_create(stores[i % 3], "web", f"sk-web-{i}") for i in range(12)),
        *(_create(stores[i % 3], f"cli-{i}", "sk-shared") for i in range(12)),
    )
    assert got[:12].count("created") == 1
    assert set(got[:12]) == {"created", "key_exists:name"}
    assert got[12:].count("created") == 1
    assert set(got[12:]) == {"created", "key_exists:secret"}
    assert len(await stores[0].list()) == 2


async def test_a_config_sync_that_fails_changes_nothing(replicas: list[PgDatabase]) -> None:
    keys = PgKeyStore(replicas[0])
    await keys.create(KeyRecord("admin-made", None, NOW), "sk-taken")
    assert await keys.sync_config([(KeyRecord("old", None, NOW), "sk-old")], NOW) == 0
    broken = [(KeyRecord("new", None, NOW), "sk-new"), (KeyRecord("dup", None, NOW), "sk-taken")]
    with pytest.raises(InvalidRequest) as caught:
        await keys.sync_config(broken, NOW + 1)
    assert caught.value.code == "key_exists"
    assert [k.name for k in await keys.list()] == ["admin-made", "old"]  # "new" rolled back
    assert await keys.find("sk-old") is not None  # and "old" was not revoked


async def test_replicas_drawing_at_once_agree_on_a_subjects_variant(
    replicas: list[PgDatabase],
) -> None:
    stores = [PgExperimentStore(db) for db in replicas]
    a = ImageVariant(Variant("a", 1, True), "aa" * 32, "png")
    b = ImageVariant(Variant("b", 1, False), "bb" * 32, "png")
    assert await stores[0].create(Experiment("hero", NOW, (a, b)), {a.image: b"a", b.image: b"b"})
    shown = await asyncio.gather(
        *(stores[i % 3].impress("hero", "alice", "ab"[i % 2], NOW + i) for i in range(10))
    )
    assert len({s.variant for s in shown}) == 1
    assert [s.first for s in shown].count(True) == 1
    assert sum(c.impressions for c in (await stores[1].counts("hero")).values()) == 1
    converted = await asyncio.gather(*(s.convert("hero", "alice", NOW + 20) for s in stores))
    assert [c.first for c in converted].count(True) == 1
    assert await stores[2].counts("hero") == {shown[0].variant: Counts(1, 1)}
