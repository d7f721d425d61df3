"""Every store the gateway uses, built in one place: `build_stores(settings) -> Stores`,
or `await open_stores(settings)`, which also opens shared mode's.

The app and the service take a `Stores` (ports only, `proxy.ports`), never a concrete
class, so a new backend is one more branch here. Building is synchronous, so `create_app`
stays synchronous: the embedded adapters open their files at once; a network adapter that
must connect before use puts its connect step in `starters` (awaited by `Stores.start`
when the app starts, before any request). Shared mode's stores (`proxy.stores.shared`:
Redis, PostgreSQL, S3) are opened by `open_stores` before the app is made instead, since
each is connected, pinged and (PostgreSQL) migrated at start, and one that cannot be
reached must stop `imagegate serve` with one line. `Stores.aclose` ends them all.
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
from proxy.stores.backend_watch import BackendWatch
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
from proxy.stores.group_commit import GroupCommitter
from proxy.stores.hit_rows import HitRowWriter
from proxy.stores.ledger import SqliteLedger
from proxy.stores.owners import process_owner

__all__ = ["Stores", "build_stores", "open_stores"]

Closer = Callable[[], Awaitable[None] | None]
Starter = Callable[[], Awaitable[None]]
Ping = Callable[[], Awaitable[None]]


async def _nothing_to_check() -> None:
    return None


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
    # Shared mode sets the rest. `owner`: this process as the owner of its reservations;
    # `lease_seconds`: how long a silent owner's reservations stay open; `sweep_seconds`:
    # how often the sweeper heartbeats and settles them; `backends`: (name, ping) for
    # /readyz (none: it pings the entry and blob stores); `before_spending`: raises
    # `BackendUnavailable` when a store a miss must write to after paying is down.
    owner: str = field(default_factory=process_owner)
    lease_seconds: float = 40.0
    sweep_seconds: float = 10.0
    backends: tuple[tuple[str, Ping], ...] = field(default=(), repr=False)
    before_spending: Ping = field(default=_nothing_to_check, repr=False)
    watch: BackendWatch | None = field(default=None, repr=False)

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


async def open_stores(settings: Settings, data_dir: Path | None = None) -> Stores:
    """The stores `settings.storage.backend` names: shared mode's connected, pinged and
    migrated (raises `proxy.stores.shared.CannotStart` naming a backend it cannot reach),
    or the embedded ones under `data_dir`."""
    if settings.storage.backend == "shared":
        from proxy.stores.shared import open_shared_stores  # the `shared` extra's clients

        return await open_shared_stores(settings)
    return build_stores(settings, data_dir)


def build_stores(
    settings: Settings,
    data_dir: Path | None = None,
    *,
    entries: EntryStore | None = None,
    blobs: BlobStore | None = None,
) -> Stores:
    """The embedded stores under `data_dir` (default `settings.data_dir`): diskcache for
    entries and blobs, SQLite for the ledger, keys, rate limits and experiments, fcntl for
    single-flight across the worker processes. `entries` / `blobs` replace those two (tests).
    Shared mode's stores are opened with `open_stores`."""
    if settings.storage.backend == "shared":
        raise ValueError('storage.backend = "shared": open the stores with `await open_stores`')
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
    commits = GroupCommitter(db)
    ledger = SqliteLedgerPort(db, hit_rows=hit_rows, commits=commits)
    buckets = SharedBuckets(root / "state.sqlite3")
    experiments = SqliteExperimentDb(root / "experiments.sqlite3")
    flights = FcntlFlightLock(root / "flights.lock")
    closers += [hit_rows.close, db.close, commits.drain]  # closed in reverse: drain, then db
    closers += [buckets.close, experiments.close, flights.close]
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
