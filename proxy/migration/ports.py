"""What a store adds so that `imagegate migrate` can copy it: `dump` and `load`.

The service's ports (`proxy.ports`) cannot enumerate what a store holds, nor write a record
as it was (keys are stored hashed, ledger rows carry ids and refunds, entries carry their
expiry), so each store kind adds one capability here. An adapter for a new backend adds one
class per store kind, e.g. for shared mode:

    Redis       EntryTransfer   (SCAN the prefix; PTTL gives `expires_at`)
    S3          BlobTransfer    (ListObjectsV2 under the prefix; HEAD for `missing`)
    PostgreSQL  KeyTransfer, LedgerTransfer, HoldTransfer, ExperimentTransfer, EventTransfer

Every `load` copies what the target lacks and reports the rest as present, so a run can be
repeated and an interrupted one resumed without a checkpoint; `write=False` only counts
(`--dry-run`). `location` names where the store lives, so that a migration from a store
onto itself is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from proxy.migration.records import (
    EntryRecord,
    EventRecord,
    ExperimentRecord,
    HoldRecord,
    KeyRow,
    LedgerRecord,
    Loaded,
)

__all__ = [
    "BlobTransfer",
    "EntryTransfer",
    "EventTransfer",
    "ExperimentTransfer",
    "HoldTransfer",
    "KeyTransfer",
    "LedgerTransfer",
    "Transfer",
    "TransferFailed",
    "TransferStores",
]

R = TypeVar("R")


class TransferFailed(Exception):
    """A store failed mid-copy for a reason other than being unreachable (which adapters
    report as `proxy.stores.backend_errors.BackendUnavailable`), e.g. a refused write. An
    adapter raises it from its client's error, once, at its edge, naming the store; the
    command prints it on one line and exits 1 (what was copied stays: a re-run resumes)."""


class Transfer(Protocol[R]):
    """One store kind's records: dumped in a stable order, loaded in batches."""

    location: str

    async def count(self) -> int | None:
        """How many records `dump` will yield, if the store can tell cheaply (else None)."""
        ...

    def dump(self) -> AsyncIterator[R]:
        """Every record, in any order (the ledger's: see `LedgerTransfer`)."""
        ...

    async def load(self, records: Sequence[R], *, write: bool = True) -> Loaded:
        """Copy the records the store lacks, each batch in one step where it can."""
        ...


EntryTransfer = Transfer[EntryRecord]
KeyTransfer = Transfer[KeyRow]
HoldTransfer = Transfer[HoldRecord]
ExperimentTransfer = Transfer[ExperimentRecord]
EventTransfer = Transfer[EventRecord]


class LedgerTransfer(Transfer[LedgerRecord], Protocol):
    """Ledger rows in (ts, insertion) order (see `records.ledger_identities`)."""

    async def open_reservations(self) -> int:
        """Reservations not yet settled: they are never copied (their call's outcome is
        only known to the process that made it)."""
        ...


class BlobTransfer(Protocol):
    """Blobs move by sha256, and their bytes are read only for those the target lacks."""

    location: str

    async def count(self) -> int | None: ...

    def dump(self) -> AsyncIterator[str]:
        """Every blob's sha256."""
        ...

    async def missing(self, shas: Sequence[str]) -> list[str]:
        """Those of `shas` this store does not hold."""
        ...

    async def read(self, sha256: str) -> bytes | None:
        """Verified bytes, or None (gone, or corrupt)."""
        ...

    async def load(self, blobs: Sequence[bytes], *, write: bool = True) -> Loaded: ...


@dataclass(frozen=True, slots=True)
class TransferStores:
    """One configuration's stores, as `imagegate migrate` reads or fills them."""

    blobs: BlobTransfer
    entries: EntryTransfer
    keys: KeyTransfer
    ledger: LedgerTransfer
    holds: HoldTransfer
    experiments: ExperimentTransfer
    events: EventTransfer

    def locations(self) -> dict[str, str]:
        return {
            "blobs": self.blobs.location,
            "entries": self.entries.location,
            "keys": self.keys.location,
            "ledger": self.ledger.location,
            "holds": self.holds.location,
            "experiments": self.experiments.location,
            "events": self.events.location,
        }
