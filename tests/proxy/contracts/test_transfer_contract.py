"""The migration capability (`proxy.migration.ports`) over every backend: what a store dumps,
loaded into an empty store of the same kind and dumped again, is the same; a second load
copies nothing. A shared adapter joins by adding its factory to `backend` and its name to
the parametrize list of the stores it holds."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.abtest import Variant
from policies.ledger_models import KeyRecord, LedgerRow
from policies.models import Entry
from proxy.config import Settings
from proxy.migration.ports import Transfer, TransferStores
from proxy.migration.records import (
    EntryRecord,
    EventRecord,
    ExperimentRecord,
    HoldRecord,
    KeyRow,
    LedgerRecord,
    ledger_identities,
)
from proxy.stores.experiments import Experiment, ImageVariant
from proxy.stores.postgres import open_postgres
from proxy.stores.redis_connection import redis_client
from proxy.stores.s3_client import S3Location, open_s3_client
from proxy.stores.transfer_opening import open_transfer_stores
from proxy.stores.transfer_pg import (
    PgEventTransfer,
    PgExperimentTransfer,
    PgHoldTransfer,
    PgKeyTransfer,
    PgLedgerTransfer,
)
from proxy.stores.transfer_redis_entries import RedisEntryTransfer
from proxy.stores.transfer_s3_blobs import S3BlobTransfer
from tests.backends.postgres import postgres_database
from tests.backends.redis import RedisBackend, open_redis_backend

NOW = 1_800_000_000.0

Factory = Callable[[Path], AbstractAsyncContextManager[TransferStores]]
# The fixture gives a factory of fresh stores: each Hypothesis example makes its own.
RUNS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ENTRY_STORES = pytest.mark.parametrize("backend", ["embedded", "redis"], indirect=True)
BLOB_STORES = pytest.mark.parametrize("backend", ["embedded", "s3"], indirect=True)
DATABASES = pytest.mark.parametrize("backend", ["embedded", "postgres"], indirect=True)


def _embedded(tmp: Path) -> AbstractAsyncContextManager[TransferStores]:
    return open_transfer_stores(Settings(data_dir=tmp))


@asynccontextmanager
async def _redis_entries(tmp: Path, redis: RedisBackend) -> AsyncIterator[TransferStores]:
    async with _embedded(tmp) as stores:
        client = redis_client(redis.url)
        prefix = f"{redis.prefix}{uuid.uuid4().hex}:"  # under the test's prefix: deleted after
        try:
            yield replace(stores, entries=RedisEntryTransfer(client, prefix))
        finally:
            await client.aclose()


@asynccontextmanager
async def _postgres(tmp: Path) -> AsyncIterator[TransferStores]:
    async with _embedded(tmp) as stores, postgres_database() as dsn:
        pg = await open_postgres(dsn, max_size=2)
        try:
            yield replace(
                stores,
                keys=PgKeyTransfer(pg.db, dsn),
                ledger=PgLedgerTransfer(pg.db, dsn),
                holds=PgHoldTransfer(pg.db, dsn),
                experiments=PgExperimentTransfer(pg.db, dsn),
                events=PgEventTransfer(pg.db, dsn),
            )
        finally:
            await pg.close()


@asynccontextmanager
async def _s3_blobs(tmp: Path, bucket: S3Location) -> AsyncIterator[TransferStores]:
    where = replace(bucket, prefix=f"blobs-{uuid.uuid4().hex}/")  # the bucket goes after
    async with _embedded(tmp) as stores, AsyncExitStack() as stack:
        client = await open_s3_client(where, stack)
        yield replace(stores, blobs=S3BlobTransfer(client, where))


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Factory:
    if request.param == "redis":
        return functools.partial(_redis_entries, redis=open_redis_backend(request))
    if request.param == "postgres":
        return _postgres
    if request.param == "s3":
        return functools.partial(_s3_blobs, bucket=request.getfixturevalue("s3_settings"))
    return _embedded


names = st.text("abcxyz019-_é", min_size=1, max_size=8)
maybe_name = st.none() | names
micros = st.integers(0, 10**12)
stamps = st.sampled_from([1_000.0, 1_000.5, 86_400.0 * 40, NOW, NOW + 0.125])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


entries = st.dictionaries(
    st.tuples(st.text("0123456789abcdef", min_size=4, max_size=64), st.integers(0, 9)),
    st.tuples(
        st.builds(
            Entry,
            blob=st.binary(min_size=1, max_size=8).map(_sha),
            format=st.sampled_from(["png", "jpeg", "webp", "gif", "svg"]),
            width=st.integers(1, 4096),
            height=st.integers(1, 4096),
            model=names,
            provider=names,
            cost_micros=micros,
            created=stamps,
            revised_prompt=maybe_name,
            prompt=st.none() | st.text(max_size=40),
        ),
        st.none() | st.floats(NOW + 60, NOW + 10**7),
    ),
    max_size=12,
).map(lambda found: [EntryRecord(k, i, e, x) for (k, i), (e, x) in sorted(found.items())])

key_records = st.builds(
    KeyRecord,
    name=names,
    team=maybe_name,
    created=stamps,
    revoked=st.none() | stamps,
    budget_micros=st.none() | micros,
    budget_window=st.sampled_from([None, "day", "month", "total"]),
    requests_per_minute=st.none() | st.integers(1, 10**6),
    images_per_minute=st.none() | st.integers(1, 10**6),
    models=st.none() | st.lists(names, max_size=3).map(tuple),
    source=st.sampled_from(["admin", "config"]),
)
keys = st.lists(key_records, max_size=6, unique_by=lambda k: k.name).map(
    lambda found: [KeyRow(k, _sha(k.name.encode())) for k in sorted(found, key=lambda k: k.name)]
)

rows = st.builds(
    LedgerRow,
    ts=stamps,
    key_name=st.sampled_from([None, "web", "batch"]),
    team=st.sampled_from([None, "red"]),
    request_key=st.sampled_from(["", "k" * 64]),
    model=st.sampled_from(["gpt-image-1", "flux"]),
    provider=st.sampled_from(["openai", "replicate"]),
    images=st.integers(0, 4),
    cost_micros=st.sampled_from([0, 1, 40_000]),
    saved_micros=st.sampled_from([0, 40_000]),
    cache=st.sampled_from(["HIT", "MISS", "ORPHANED"]),
    request_id=st.sampled_from([None, "req-1"]),
    requests=st.integers(1, 3),
    over_quote_micros=st.sampled_from([0, 5]),
)


@st.composite
def ledgers(draw: st.DrawFn) -> list[LedgerRecord]:
    """Rows with repeats (identical rows must all be kept), in (ts, insertion) order."""
    distinct = draw(st.lists(rows, max_size=15))
    repeats = draw(st.lists(st.sampled_from(distinct), max_size=10)) if distinct else []
    found = sorted(distinct + repeats, key=lambda r: r.ts)
    extras = [(draw(st.sampled_from([0, 0, 7])), draw(st.booleans())) for _ in found]
    return [
        LedgerRecord(row, name, refunded, f"res-{n}" if reserved else None)
        for n, (row, name, (refunded, reserved)) in enumerate(
            zip(found, ledger_identities(found), extras, strict=True)
        )
    ]


holds = st.dictionaries(names, st.tuples(names, stamps), max_size=4).map(
    lambda found: [HoldRecord(m, r, s) for m, (r, s) in sorted(found.items())]
)


@st.composite
def experiments(draw: st.DrawFn) -> tuple[list[ExperimentRecord], list[EventRecord]]:
    made: list[ExperimentRecord] = []
    events: list[EventRecord] = []
    for name in sorted(draw(st.sets(names, max_size=3))):
        images = draw(st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=3,
                               unique=True))  # fmt: skip
        variants = tuple(
            ImageVariant(Variant(f"v{i}", i + 1, i == 0, f"V{i}"), _sha(data), "png", None, None)
            for i, data in enumerate(images)
        )
        made.append(ExperimentRecord(Experiment(name, NOW, variants), {_sha(d): d for d in images}))
        for subject in sorted(draw(st.sets(names, max_size=4))):
            variant = draw(st.sampled_from(variants)).variant.id
            events.append(EventRecord("impression", name, subject, variant, NOW + 1))
            if draw(st.booleans()):
                events.append(EventRecord("conversion", name, subject, variant, NOW + 2))
    events.sort(key=lambda e: (e.kind != "impression", e.experiment, e.subject))
    return made, events


async def _dump(transfer: Transfer[object]) -> list[object]:
    return [record async for record in transfer.dump()]


def _close_expiry(a: list[EntryRecord], b: list[EntryRecord]) -> bool:
    """A TTL is written relative to the clock: its absolute expiry moves by microseconds."""
    return [(r.key, r.index, r.entry) for r in a] == [(r.key, r.index, r.entry) for r in b] and all(
        (x.expires_at is None) == (y.expires_at is None)
        and (x.expires_at is None or abs(x.expires_at - (y.expires_at or 0)) < 5)
        for x, y in zip(a, b, strict=True)
    )


def _address(record: object) -> tuple[str, int]:
    assert isinstance(record, EntryRecord)
    return record.key, record.index


async def _round_trip(factory: Factory, step: str, records: list[object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with factory(Path(tmp) / "a") as first, factory(Path(tmp) / "b") as second:
            a, b = getattr(first, step), getattr(second, step)
            loaded = await a.load(records)
            assert (loaded.copied, loaded.present) == (len(records), 0)
            dumped = await _dump(a)
            again = await b.load(dumped)
            assert again.copied == len(dumped)
            redumped = await _dump(b)
            if step == "entries":  # a store may list its entries in any order
                dumped.sort(key=_address)
                redumped.sort(key=_address)
                assert _close_expiry(records, dumped) and _close_expiry(dumped, redumped)
            else:
                assert dumped == records and redumped == dumped
            twice = await b.load(redumped)
            assert (twice.copied, twice.present) == (0, len(redumped))


@ENTRY_STORES
@RUNS
@given(found=entries)
def test_entries_round_trip(backend, found):
    asyncio.run(_round_trip(backend, "entries", found))


@DATABASES
@RUNS
@given(found=keys)
def test_keys_round_trip_by_secret_hash(backend, found):
    asyncio.run(_round_trip(backend, "keys", found))


@DATABASES
@RUNS
@given(found=ledgers())
def test_ledger_rows_round_trip_with_repeats_and_refunds(backend, found):
    asyncio.run(_round_trip(backend, "ledger", found))


@DATABASES
@RUNS
@given(found=holds)
def test_holds_round_trip(backend, found):
    asyncio.run(_round_trip(backend, "holds", found))


@DATABASES
@RUNS
@given(made=experiments())
def test_experiments_and_events_round_trip(backend, made):
    asyncio.run(_round_trip_experiments(backend, *made))


async def _round_trip_experiments(factory, found, events) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with factory(Path(tmp) / "a") as first, factory(Path(tmp) / "b") as second:
            for stores in (first, second):
                await stores.experiments.load(found)
                await stores.events.load(events)
            assert await _dump(first.experiments) == found == await _dump(second.experiments)
            assert await _dump(first.events) == events == await _dump(second.events)
            again = await second.events.load(events)
            assert (again.copied, again.present) == (0, len(events))


@BLOB_STORES
@RUNS
@given(found=st.lists(st.binary(max_size=64), max_size=8, unique=True))
def test_blobs_round_trip_by_sha256(backend, found):
    asyncio.run(_round_trip_blobs(backend, found))


async def _round_trip_blobs(factory: Factory, found: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with factory(Path(tmp) / "a") as first, factory(Path(tmp) / "b") as second:
            await first.blobs.load(found)
            shas = [sha async for sha in first.blobs.dump()]
            assert shas == sorted(_sha(d) for d in found)
            assert await second.blobs.missing(shas) == shas
            await second.blobs.load([await first.blobs.read(s) or b"" for s in shas])
            assert [sha async for sha in second.blobs.dump()] == shas
            assert await second.blobs.missing(shas) == []
            assert [await second.blobs.read(s) for s in shas] == [
                await first.blobs.read(s) for s in shas
            ]
