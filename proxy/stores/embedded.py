"""The embedded adapters of the ports (`proxy.ports`): today's SQLite and fcntl classes,
behind async methods. Blocking work (an fsynced SQLite commit, a wait for SQLite's write
lock or for another process's record lock) runs in a thread, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from policies.abtest import Counts
from policies.budget import BudgetSpec, BudgetUsage, Denied, Window
from policies.ledger_models import KeyRecord, LedgerRow
from policies.ratelimit import Allowed, Bucket, Limited, Oversized, Rate, take_all
from proxy.stores.buckets import BUSY, SharedBuckets
from proxy.stores.experiments import Conversion, Experiment, ExperimentStore, Impression
from proxy.stores.group_commit import GroupCommitter
from proxy.stores.hit_rows import HitRowWriter
from proxy.stores.ledger import SqliteLedger, row_values
from proxy.stores.owners import OwnerState, owner_state

__all__ = ["SqliteExperiments", "SqliteKeyStore", "SqliteLedgerPort", "SqliteLimitStore"]

_to_thread = asyncio.to_thread
_CHECKPOINT_EVERY = 40  # hit rows are recorded every quarter second: about every 10 s
_HIT_SLICE = 200  # hit rows inserted between two turns of the event loop (~1 ms)


class SqliteKeyStore:
    """`KeyStore` over the ledger database's `api_keys` table."""

    def __init__(self, ledger: SqliteLedger) -> None:
        self._db = ledger

    async def create(self, key: KeyRecord, secret: str) -> None:
        await _to_thread(self._db.create_key, key, secret)

    async def find(self, secret: str) -> KeyRecord | None:
        return await _to_thread(self._db.find_key, secret)

    async def list(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        return await _to_thread(self._db.list_keys, include_revoked=include_revoked)

    async def revoke(self, name: str, now: float) -> bool:
        return await _to_thread(self._db.revoke_key, name, now)

    async def set_budget(self, name: str, budget_micros: int | None, window: Window) -> bool:
        return await _to_thread(self._db.set_budget, name, budget_micros, window)

    async def sync_config(self, keys: Sequence[tuple[KeyRecord, str]], now: float) -> int:
        def sync() -> int:
            for record, secret in keys:
                self._db.upsert_config_key(record, secret)
            return self._db.retire_config_keys({r.name for r, _ in keys}, now)

        return await _to_thread(sync)


class SqliteLedgerPort:
    """`Ledger`, `LedgerReports` and `CircuitHolds` over `SqliteLedger`.

    `state`: whether an owner's process still runs (tests inject one). `hit_rows`: a
    second connection that writes rows without money from the event loop. `commits`: the
    group committer settles go through (by default one over `ledger`)."""

    def __init__(
        self,
        ledger: SqliteLedger,
        state: Callable[[str], OwnerState] = owner_state,
        *,
        hit_rows: HitRowWriter | None = None,
        commits: GroupCommitter | None = None,
    ) -> None:
        self._db = ledger
        self._commits = GroupCommitter(ledger) if commits is None else commits
        self._state = state
        self._hit_rows = hit_rows  # free rows written from the loop (else: all in a thread)
        self._records = 0

    # -- Ledger ------------------------------------------------------------------------------

    async def reserve(
        self,
        budgets: Sequence[BudgetSpec],
        amount_micros: int,
        now: float,
        owner: str,
        draft: LedgerRow | None = None,
    ) -> str | Denied:
        return await _to_thread(self._db.reserve, budgets, amount_micros, now, owner, draft)

    async def settle(self, reservation_id: str, row: LedgerRow) -> None:
        """Committed with the settles around it, in one fsync (`proxy.stores.group_commit`);
        returns once that commit has. A cancelled caller's row is written all the same."""
        await self._commits.run(lambda db: self._db.settle_in(db, reservation_id, row))

    async def release(self, reservation_id: str) -> None:
        await _to_thread(self._db.release, reservation_id)

    async def abandon(self, reservation_id: str) -> LedgerRow | None:
        return await _to_thread(self._db.abandon, reservation_id)

    async def resolve_orphans(self, owner: str, now: float, lease: float) -> list[LedgerRow]:
        def sweep() -> list[LedgerRow]:
            self._db.heartbeat(owner, now)
            return self._db.resolve_orphans(now, lease, self._state)

        return await _to_thread(sweep)

    async def record(self, rows: Sequence[LedgerRow]) -> None:
        """In one commit. Rows that move no money (the hit rows, every quarter second) are
        written on the loop when the write lock is free, in slices of about a millisecond
        (`proxy.stores.hit_rows`: a thread's GIL hand-offs put 50-90 ms into the hits'
        p99), else from a thread that waits for it. Every `_CHECKPOINT_EVERY` records the
        WAL is folded into the database, or the hit rows would grow it without end."""
        self._records += 1
        writer = self._hit_rows
        free = all(row.cost_micros == 0 for row in rows)
        if free and writer is not None and writer.begin():
            try:
                values = [row_values(row) for row in rows]
                for start in range(0, len(values), _HIT_SLICE):
                    writer.insert(values[start : start + _HIT_SLICE])
                    await asyncio.sleep(0)  # serve requests in between
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
        else:
            await _to_thread(self._db.record_many, rows)
        if self._records % _CHECKPOINT_EVERY == 0:
            await _to_thread(self._db.checkpoint)

    async def budget_left(self, budgets: Sequence[BudgetSpec], now: float) -> list[BudgetUsage]:
        return await _to_thread(self._db.budget_left, budgets, now)

    # -- LedgerReports -----------------------------------------------------------------------

    async def spend_by(
        self, group: Literal["key", "team", "model", "day"], since: float | None = None
    ) -> list[dict[str, Any]]:
        return await _to_thread(self._db.spend_by, group, since)

    async def totals(self, since: float | None = None) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            return {
                "hit_ratio": self._db.hit_ratio(since),
                "open_reservations": self._db.open_reservations(),
                **self._db.money_totals(),
            }

        return await _to_thread(read)

    async def rows(self, limit: int = 50, offset: int = 0) -> list[LedgerRow]:
        return await _to_thread(self._db.rows, limit, offset)

    async def over_quote_by_model(self) -> list[tuple[str, str, int]]:
        return await _to_thread(self._db.over_quote_by_model)

    async def orphans(self, limit: int = 100) -> list[dict[str, object]]:
        return await _to_thread(self._db.orphans, limit)

    async def refund(self, row_id: int) -> tuple[int, bool] | None:
        return await _to_thread(self._db.refund, row_id)

    # -- CircuitHolds ------------------------------------------------------------------------

    async def hold_model(self, model: str, reason: str, now: float) -> None:
        await _to_thread(self._db.hold_model, model, reason, now)

    async def release_hold(self, model: str) -> bool:
        return await _to_thread(self._db.release_hold, model)

    async def holds(self) -> dict[str, str]:
        return await _to_thread(self._db.holds)


class SqliteLimitStore:
    """`LimitStore` over `SharedBuckets` (one SQLite table shared by the worker processes).
    A take runs inline when SQLite's write lock is free (no fsync: microseconds); when
    another writer holds it, the wait runs in a thread, off the event loop."""

    def __init__(self, buckets: SharedBuckets) -> None:
        self._buckets = buckets

    async def take_all(
        self, takes: Sequence[tuple[str, Rate, int]], now: float
    ) -> Allowed | Limited | Oversized:
        def decide(
            current: list[Bucket | None],
        ) -> tuple[Sequence[Bucket], Allowed | Limited | Oversized]:
            return take_all([(b, r, c) for b, (_, r, c) in zip(current, takes, strict=True)], now)

        keys = [key for key, _, _ in takes]
        found = self._buckets.try_update(keys, decide)
        if found is BUSY:
            return await _to_thread(self._buckets.update, keys, decide)
        return cast(Allowed | Limited | Oversized, found)


class SqliteExperiments:
    """`ExperimentStore` over `proxy.stores.experiments.ExperimentStore` (SQLite)."""

    def __init__(self, store: ExperimentStore) -> None:
        self._db = store

    async def create(self, experiment: Experiment, images: Mapping[str, bytes]) -> bool:
        return await _to_thread(self._db.create, experiment, images)

    async def get(self, name: str) -> Experiment | None:
        return await _to_thread(self._db.get, name)

    async def experiments(self) -> list[Experiment]:
        return await _to_thread(self._db.experiments)

    async def delete(self, name: str) -> bool:
        return await _to_thread(self._db.delete, name)

    async def image(self, sha256: str) -> bytes | None:
        return await _to_thread(self._db.image, sha256)

    async def seen(self, experiment: str, subject: str) -> str | None:
        return await _to_thread(self._db.seen, experiment, subject)

    async def impress(self, experiment: str, subject: str, variant: str, ts: float) -> Impression:
        return await _to_thread(self._db.record_impression, experiment, subject, variant, ts)

    async def convert(self, experiment: str, subject: str, ts: float) -> Conversion:
        return await _to_thread(self._db.record_conversion, experiment, subject, ts)

    async def counts(self, experiment: str) -> dict[str, Counts]:
        return await _to_thread(self._db.counts, experiment)
