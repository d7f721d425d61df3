"""The ExperimentStore contract, over every adapter: what a PostgreSQL one must also do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from policies.abtest import Counts, Variant
from proxy.ports import ExperimentStore
from proxy.stores.embedded import SqliteExperiments
from proxy.stores.experiments import Experiment, ImageVariant
from proxy.stores.experiments import ExperimentStore as SqliteExperimentDb
from proxy.stores.memory_state import MemoryExperiments
from tests.backends.postgres import postgres_stores

NOW = 1_700_000_000.0
A = ImageVariant(Variant("a", 1, True, "control"), "aa" * 32, "png", "k" * 64, 0)
B = ImageVariant(Variant("b", 2, False, "new"), "bb" * 32, "webp")
HERO = Experiment("hero", NOW, (A, B))
IMAGES = {A.image: b"png bytes", B.image: b"webp bytes"}


def _sqlite(tmp: Path) -> tuple[ExperimentStore, Callable[[], None]]:
    db = SqliteExperimentDb(tmp / "experiments.sqlite3")
    return SqliteExperiments(db), db.close


FACTORIES: dict[str, Callable[[Path], tuple[ExperimentStore, Callable[[], None]]]] = {
    "sqlite": _sqlite,
    "memory": lambda _: (MemoryExperiments(), lambda: None),
}


@pytest.fixture(params=[*sorted(FACTORIES), "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ExperimentStore]:
    if request.param == "postgres":
        async with postgres_stores() as stores:
            assert await stores.experiments.create(HERO, IMAGES)
            yield stores.experiments
        return
    made, close = FACTORIES[request.param](tmp_path)
    assert await made.create(HERO, IMAGES)
    yield made
    close()


async def test_an_experiment_round_trips_with_its_images(store: ExperimentStore) -> None:
    assert await store.get("hero") == HERO
    assert await store.get("nope") is None
    assert await store.image(B.image) == b"webp bytes"
    assert not await store.create(Experiment("hero", NOW + 1, (B,)), {})
    assert await store.get("hero") == HERO


async def test_assignment_is_sticky(store: ExperimentStore) -> None:
    first = await store.impress("hero", "alice", "b", NOW)
    again = await store.impress("hero", "alice", "a", NOW + 1)  # a new draw loses
    assert (first.variant, first.first, again.variant, again.first) == ("b", True, "b", False)
    assert await store.seen("hero", "alice") == "b"
    assert await store.seen("hero", "bob") is None


async def test_a_conversion_counts_once_for_the_variant_shown(store: ExperimentStore) -> None:
    unseen = await store.convert("hero", "carol", NOW)
    assert (unseen.variant, unseen.first) == (None, False)
    await store.impress("hero", "alice", "b", NOW)
    await store.impress("hero", "bob", "a", NOW)
    await store.impress("hero", "dave", "b", NOW)
    first = await store.convert("hero", "alice", NOW + 1)
    again = await store.convert("hero", "alice", NOW + 2)
    assert (first.variant, first.first, again.variant, again.first) == ("b", True, "b", False)
    assert await store.counts("hero") == {"a": Counts(1, 0), "b": Counts(2, 1)}


async def test_delete_drops_events_and_unshared_images(store: ExperimentStore) -> None:
    other = Experiment("other", NOW, (A,))
    assert await store.create(other, {A.image: b"png bytes"})
    await store.impress("hero", "alice", "b", NOW)
    assert await store.delete("hero")
    assert not await store.delete("hero")
    assert await store.get("hero") is None
    assert await store.counts("hero") == {}
    assert await store.image(B.image) is None
    assert await store.image(A.image) == b"png bytes"  # still shown by "other"
