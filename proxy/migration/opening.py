"""Open one configuration's stores for `imagegate migrate`, from its own settings.

The config reader does not know `[storage] backend` yet, so every configuration opens the
embedded stores. Shared mode adds its branch here when it does: entries are
`RedisEntryTransfer(client, redis.prefix)` (`proxy.migration.redis_entries`, over the
client of `proxy.stores.redis_stores`); blobs (S3) and keys, ledger, holds, experiments
and events (PostgreSQL) each need their class (see `proxy.migration.ports`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from proxy.config import Settings
from proxy.migration.embedded_disk import DiskBlobTransfer, DiskEntryTransfer
from proxy.migration.embedded_experiments import (
    ExperimentFile,
    SqliteEventTransfer,
    SqliteExperimentTransfer,
)
from proxy.migration.embedded_ledger import (
    LedgerFile,
    SqliteHoldTransfer,
    SqliteKeyTransfer,
    SqliteLedgerTransfer,
)
from proxy.migration.ports import TransferStores
from proxy.stores.disk import DiskBlobStore, DiskEntryStore

__all__ = ["open_transfer_stores"]


@asynccontextmanager
async def open_transfer_stores(settings: Settings) -> AsyncIterator[TransferStores]:
    """The stores of `settings`, opened as the gateway opens them (same files, same
    diskcache settings), closed on exit."""
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
