"""Open one configuration's stores for `imagegate migrate`, from its own settings.

Only the embedded backend exists in this build; shared mode adds its branch here (Redis
entries, S3 blobs, PostgreSQL keys, ledger and experiments), one transfer class per store.
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
