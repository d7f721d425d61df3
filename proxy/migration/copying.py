"""One migration run: what is copied, in which order, in which batches.

Order: blobs, then entries (an entry is copied only once its image is in the target, so a
gateway on the target never finds an entry without its blob), keys, ledger rows, circuit
holds, experiments, then their impressions and conversions (a conversion after the
impression it counts for). Every load copies only what the target lacks, so a run killed
at any point is resumed by running it again, and a finished one, run again, copies nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from proxy.migration.ports import Transfer, TransferStores
from proxy.migration.records import EntryRecord, Loaded

__all__ = ["STEPS", "MigrationRefused", "Progress", "Run", "check_run", "copy_stores"]

STEPS: Final = ("blobs", "entries", "keys", "ledger", "holds", "experiments", "events")
_BATCH: Final[dict[str, int]] = {"entries": 500, "keys": 500, "ledger": 1000, "holds": 100,
                                 "experiments": 16, "events": 1000}  # fmt: skip
_BLOB_BATCH: Final = 64
_GONE: Final = "gone or corrupt in the source"
_NO_BLOB: Final = "its image is not in the target (see blobs)"
_NOT_READ: Final = "expired or unreadable in the source"
R = TypeVar("R")


class MigrationRefused(Exception):
    """A run that must not start; the message says what to do."""


class Progress(Protocol):
    def start(self, step: str, total: int | None) -> None: ...

    def advance(self, step: str, done: int) -> None: ...

    def finish(self, step: str, loaded: Loaded) -> None: ...


@dataclass(frozen=True, slots=True)
class Run:
    write: bool = True  # False: --dry-run, count what would be copied
    force: bool = False  # copy although reservations are open (they are left behind)


async def check_run(source: TransferStores, target: TransferStores, run: Run) -> int:
    """Refuse a copy onto the same stores, or away from open reservations unless forced (a
    dry run only counts them); the number of open reservations left behind."""
    mine, theirs = source.locations(), target.locations()
    same = [step for step in STEPS if mine[step] == theirs[step]]
    if same:
        raise MigrationRefused(
            f"--from and --to use the same stores ({mine[same[0]]}): point --to at the "
            "new configuration"
        )
    open_now = await source.ledger.open_reservations()
    if open_now and run.write and not run.force:
        raise MigrationRefused(
            f"{open_now} budget reservation(s) are open in the source ledger (a gateway on it "
            "is running, or stopped mid-call): stop that gateway, start it once and stop it so "
            "it settles them, then run migrate again; or pass --force to copy without them"
        )
    return open_now


async def copy_stores(
    source: TransferStores, target: TransferStores, progress: Progress, run: Run
) -> dict[str, Loaded]:
    """Copy every step in order; what each step did."""
    done: dict[str, Loaded] = {}
    for step in STEPS:
        total = await getattr(source, step).count()
        progress.start(step, total)
        if step == "blobs":
            loaded = await _copy_blobs(source, target, progress, run)
        elif step == "entries":
            loaded = await _copy_entries(source, target, progress, run)
        else:
            loaded = await _copy(step, getattr(source, step), getattr(target, step), progress, run)
        if total is not None and total > loaded.seen:
            loaded = loaded + Loaded(skipped={_NOT_READ: total - loaded.seen})
        progress.finish(step, loaded)
        done[step] = loaded
    return done


async def _batches(records: AsyncIterator[R], size: int) -> AsyncIterator[list[R]]:
    batch: list[R] = []
    async for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _copy(
    step: str, source: Transfer[R], target: Transfer[R], progress: Progress, run: Run
) -> Loaded:
    loaded = Loaded()
    async for batch in _batches(source.dump(), _BATCH[step]):
        loaded = loaded + await target.load(batch, write=run.write)
        progress.advance(step, loaded.seen)
    return loaded


async def _copy_blobs(
    source: TransferStores, target: TransferStores, progress: Progress, run: Run
) -> Loaded:
    """Read from the source only the blobs the target lacks, one at a time (a blob may be
    megabytes: memory stays at one blob)."""
    loaded = Loaded()
    async for shas in _batches(source.blobs.dump(), _BLOB_BATCH):
        lacking = await target.blobs.missing(shas)
        loaded = loaded + Loaded(present=len(shas) - len(lacking))
        for sha in lacking:
            data = await source.blobs.read(sha)
            if data is None:
                loaded = loaded + Loaded(skipped={_GONE: 1})
            else:
                loaded = loaded + await target.blobs.load([data], write=run.write)
            progress.advance("blobs", loaded.seen)
        progress.advance("blobs", loaded.seen)
    return loaded


async def _copy_entries(
    source: TransferStores, target: TransferStores, progress: Progress, run: Run
) -> Loaded:
    loaded = Loaded()
    async for batch in _batches(source.entries.dump(), _BATCH["entries"]):
        lacking = set(await _lacking_blobs(source, target, batch, run))
        ready = [r for r in batch if r.entry.blob not in lacking]
        if len(ready) < len(batch):
            loaded = loaded + Loaded(skipped={_NO_BLOB: len(batch) - len(ready)})
        loaded = loaded + await target.entries.load(ready, write=run.write)
        progress.advance("entries", loaded.seen)
    return loaded


async def _lacking_blobs(
    source: TransferStores, target: TransferStores, batch: Sequence[EntryRecord], run: Run
) -> list[str]:
    """The batch's blobs the target lacks (in a dry run, lacks and would not be given)."""
    lacking = await target.blobs.missing(sorted({r.entry.blob for r in batch}))
    if run.write or not lacking:
        return lacking
    return await source.blobs.missing(lacking)
