"""Open one configuration's stores for `imagegate migrate`, from its own settings: the
embedded files under its `data_dir`, or, with `[storage] backend = "shared"`, its Redis
(entries), S3 bucket (blobs) and PostgreSQL database (keys, ledger, holds, experiments).

Opening a shared side checks every backend first (a ping, the bucket, the database's
migrations under their advisory lock), so one that cannot be reached stops the run before
anything is copied, with `BackendUnavailable` naming it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlsplit

from proxy.config import Settings
from proxy.migration.ports import TransferStores
from proxy.stores.disk import DiskBlobStore, DiskEntryStore
from proxy.stores.postgres import open_postgres
from proxy.stores.redis_connection import connect_redis
from proxy.stores.s3_blobs import S3BlobStore
from proxy.stores.s3_client import open_s3_client, s3_location
from proxy.stores.transfer_disk import DiskBlobTransfer, DiskEntryTransfer
from proxy.stores.transfer_pg import (
    PgEventTransfer,
    PgExperimentTransfer,
    PgHoldTransfer,
    PgKeyTransfer,
    PgLedgerTransfer,
)
from proxy.stores.transfer_redis_entries import RedisEntryTransfer
from proxy.stores.transfer_s3_blobs import S3BlobTransfer
from proxy.stores.transfer_sqlite_experiments import (
    ExperimentFile,
    SqliteEventTransfer,
    SqliteExperimentTransfer,
)
from proxy.stores.transfer_sqlite_ledger import (
    LedgerFile,
    SqliteHoldTransfer,
    SqliteKeyTransfer,
    SqliteLedgerTransfer,
)

__all__ = ["OPEN_ERRORS", "open_transfer_stores"]

# What opening or reading a side may raise besides BackendUnavailable: its files.
OPEN_ERRORS: tuple[type[Exception], ...] = (OSError, sqlite3.Error)


@asynccontextmanager
async def open_transfer_stores(settings: Settings) -> AsyncIterator[TransferStores]:
    """The stores of `settings`, opened as the gateway opens them, closed on exit."""
    if settings.storage.backend == "shared":
        async with _shared(settings) as stores:
            yield stores
        return
    data_dir = settings.data_dir
    blobs = DiskBlobTransfer(DiskBlobStore(data_dir / "blobs", max_bytes=settings.cache.max_bytes))
    entries = DiskEntryTransfer(DiskEntryStore(data_dir / "entries"))
    ledger = LedgerFile(data_dir / "ledger.sqlite3")
    experiments = ExperimentFile(data_dir / "experiments.sqlite3")
    try:
        yield TransferStores(
            blobs=blobs,
            entries=entries,
            keys=SqliteKeyTransfer(ledger),
            ledger=SqliteLedgerTransfer(ledger),
            holds=SqliteHoldTransfer(ledger),
            experiments=SqliteExperimentTransfer(experiments),
            events=SqliteEventTransfer(experiments),
        )
    finally:
        blobs.close()
        entries.close()
        ledger.close()
        experiments.close()


def _database(dsn: str) -> str:
    """host:port/database of a DSN, never its password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


@asynccontextmanager
async def _shared(settings: Settings) -> AsyncIterator[TransferStores]:
    async with AsyncExitStack() as stack:
        redis = await connect_redis(settings.redis.url.reveal())
        stack.push_async_callback(redis.aclose)
        dsn = settings.postgres.dsn.reveal()
        pg = await open_postgres(dsn, min_size=1, max_size=2)
        stack.push_async_callback(pg.close)
        location = s3_location(settings.s3)
        s3 = await open_s3_client(location, stack)
        await S3BlobStore(s3, location).ping()  # the bucket exists and answers
        where = _database(dsn)
        yield TransferStores(
            blobs=S3BlobTransfer(s3, location),
            entries=RedisEntryTransfer(redis, settings.redis.prefix),
            keys=PgKeyTransfer(pg.db, where),
            ledger=PgLedgerTransfer(pg.db, where),
            holds=PgHoldTransfer(pg.db, where),
            experiments=PgExperimentTransfer(pg.db, where),
            events=PgEventTransfer(pg.db, where),
        )
