"""Every store the gateway uses, built in one place: `build_stores(settings) -> Stores`.

The app and the service take a `Stores` (ports only, `proxy.ports`), never a concrete
class, so a new backend is one more branch here. Building is synchronous, so `create_app`
stays synchronous: the embedded adapters open their files at once; a network adapter that
must connect before use puts its connect step in `starters` (awaited by `Stores.start`
when the app starts, before any request). `Stores.aclose` ends them all.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from proxy.config import Settings
from proxy.ports import (
    BlobStore,
    CircuitHolds,
    EntryStore,
    ExperimentStore,
    FlightLock,
    KeyStore,
    Ledger,
    LedgerReports,
    LimitStore,
)
from proxy.stores.async_stores import InlineEntryStore, ThreadedBlobStore
from proxy.stores.buckets import SharedBuckets
from proxy.stores.disk import DiskBlobStore, DiskEntryStore
from proxy.stores.embedded import (
    SqliteExperiments,
    SqliteKeyStore,
    SqliteLedgerPort,
    SqliteLimitStore,
)
from proxy.stores.experiments import ExperimentStore as SqliteExperimentDb
from proxy.stores.flight_locks import FcntlFlightLock
from proxy.stores.hit_rows import HitRowWriter
from proxy.stores.ledger import SqliteLedger

__all__ = ["Stores", "build_stores"]

Closer = Callable[[], Awaitable[None] | None]
Starter = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Stores:
    """One port per store. `reports` and `holds` are usually the ledger's own adapter."""

    entries: EntryStore
    blobs: BlobStore
    keys: KeyStore
    ledger: Ledger
    reports: LedgerReports
    holds: CircuitHolds
    limits: LimitStore
    flights: FlightLock
    experiments: ExperimentStore
    closers: tuple[Closer, ...] = field(default=(), repr=False)
    starters: tuple[Starter, ...] = field(default=(), repr=False)

    async def start(self) -> None:
        """Connect what must be connected before the first request (in build order)."""
        for start in self.starters:
            await start()

    async def aclose(self) -> None:
        """Close every store, last built first (each may be sync or async)."""
        for close in reversed(self.closers):
            done = close()
            if inspect.isawaitable(done):
                await done


def build_stores(
    settings: Settings,
    data_dir: Path | None = None,
    *,
    entries: EntryStore | None = None,
    blobs: BlobStore | None = None,
) -> Stores:
    """The embedded stores under `data_dir` (default `settings.data_dir`): diskcache for
    entries and blobs, SQLite for the ledger, keys, rate limits and experiments, fcntl for
    single-flight across the worker processes. `entries` / `blobs` replace those two (tests)."""
    root = data_dir or settings.data_dir
    closers: list[Closer] = []
    if entries is None:
        disk_entries = InlineEntryStore(DiskEntryStore(root / "entries"))
        closers.append(disk_entries.close)
        entries = disk_entries
    if blobs is None:
        disk_blobs = ThreadedBlobStore(
            DiskBlobStore(root / "blobs", max_bytes=settings.cache.max_bytes)
        )
        closers.append(disk_blobs.close)
        blobs = disk_blobs
    db = SqliteLedger(root / "ledger.sqlite3")
    hit_rows = HitRowWriter(db.path)
    ledger = SqliteLedgerPort(db, hit_rows=hit_rows)
    buckets = SharedBuckets(root / "state.sqlite3")
    experiments = SqliteExperimentDb(root / "experiments.sqlite3")
    flights = FcntlFlightLock(root / "flights.lock")
    closers += [hit_rows.close, db.close, buckets.close, experiments.close, flights.close]
    return Stores(
        entries=entries,
        blobs=blobs,
        keys=SqliteKeyStore(db),
        ledger=ledger,
        reports=ledger,
        holds=ledger,
        limits=SqliteLimitStore(buckets),
        flights=flights,
        experiments=SqliteExperiments(experiments),
        closers=tuple(closers),
    )
