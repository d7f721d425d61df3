"""`KeyTransfer`, `LedgerTransfer`, `HoldTransfer`, `ExperimentTransfer` and `EventTransfer`
over shared mode's PostgreSQL (`proxy.stores.pg_*`, the same tables the gateway uses).

A ledger row goes in with the gateway's own `insert_row` and its cost goes to the budget
totals through `apply_deltas`, in the same transaction, so budgets and reports count it as
the source did. Each batch is one transaction: a killed run leaves whole batches. Connection
failures arrive as `BackendUnavailable` (mapped by `PgDatabase`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Literal

from policies.ledger_models import KeyRecord, LedgerRow
from proxy.migration.records import (
    EventRecord,
    ExperimentRecord,
    HoldRecord,
    KeyRow,
    LedgerIdentities,
    LedgerRecord,
    Loaded,
)
from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_experiments import PgExperimentStore
from proxy.stores.pg_ledger_rows import apply_deltas, insert_row, spend_deltas

__all__ = [
    "PgEventTransfer",
    "PgExperimentTransfer",
    "PgHoldTransfer",
    "PgKeyTransfer",
    "PgLedgerTransfer",
]

_PAGE: Final = 1000
# Text orders are by code point (COLLATE "C"), as Python and SQLite sort: the dump order is
# the same on every backend, and the pages of a dump follow the order they are read in.
_KEYS: Final = (
    "SELECT name, team, created, revoked, budget_micros, budget_window, requests_per_minute, "
    "images_per_minute, models::text AS models, source, key_hash FROM api_keys "
    'ORDER BY name COLLATE "C"'
)
_KEY_INSERT: Final = (
    "INSERT INTO api_keys (name, team, created, revoked, budget_micros, budget_window, "
    "requests_per_minute, images_per_minute, models, source, key_hash) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)"
)
_ROW: Final = (
    "ts, key_name, team, request_key, model, provider, images, cost_micros, saved_micros, "
    "cache, request_id, requests, over_quote_micros, id, refunded_micros, reservation"
)
_ROWS_AFTER: Final = f"SELECT {_ROW} FROM ledger WHERE (ts, id) > ($1, $2) ORDER BY ts, id LIMIT $3"  # noqa: S608  # constant
_ROWS_BETWEEN: Final = f"SELECT {_ROW} FROM ledger WHERE ts BETWEEN $1 AND $2 ORDER BY ts, id"  # noqa: S608  # constant
_TABLES: Final[dict[str, str]] = {
    "impression": "experiment_impressions",
    "conversion": "experiment_conversions",
}


def _key(raw: Any) -> KeyRow:
    models = raw["models"]
    record = KeyRecord(
        raw["name"], raw["team"], raw["created"], raw["revoked"], raw["budget_micros"],
        raw["budget_window"], raw["requests_per_minute"], raw["images_per_minute"],
        None if models is None else tuple(json.loads(models)), raw["source"],
    )  # fmt: skip
    return KeyRow(record, raw["key_hash"])


class PgKeyTransfer:
    def __init__(self, db: PgDatabase, where: str) -> None:
        self._db = db
        self.location = f"postgres keys {where}"

    async def count(self) -> int | None:
        return None

    async def dump(self) -> AsyncIterator[KeyRow]:
        async with self._db.connection() as conn:
            found = await conn.fetch(_KEYS)
        for raw in found:
            yield _key(raw)

    async def load(self, records: Sequence[KeyRow], *, write: bool = True) -> Loaded:
        copied = present = taken = 0
        async with self._db.transaction() as conn:
            names = {r[0] for r in await conn.fetch("SELECT name FROM api_keys")}
            hashes = {r[0] for r in await conn.fetch("SELECT key_hash FROM api_keys")}
            for key in records:
                r = key.record
                if r.name in names:
                    present += 1
                    continue
                if key.secret_sha256 in hashes:
                    taken += 1
                    continue
                if write:
                    models = None if r.models is None else json.dumps(list(r.models))
                    await conn.execute(
                        _KEY_INSERT, r.name, r.team, r.created, r.revoked, r.budget_micros,
                        r.budget_window, r.requests_per_minute, r.images_per_minute, models,
                        r.source, key.secret_sha256,
                    )  # fmt: skip
                names.add(r.name)
                hashes.add(key.secret_sha256)
                copied += 1
        skipped = {"its secret is another key's in the target": taken} if taken else {}
        return Loaded(copied, present, skipped)


def _valid(found: Sequence[Any]) -> list[tuple[LedgerRow, Any]]:
    rows: list[tuple[LedgerRow, Any]] = []
    for raw in found:
        try:
            rows.append((LedgerRow(*list(raw)[:13]), raw))
        except (TypeError, ValueError):
            continue
    return rows


class PgLedgerTransfer:
    def __init__(self, db: PgDatabase, where: str) -> None:
        self._db = db
        self.location = f"postgres ledger {where}"

    async def count(self) -> int | None:
        async with self._db.connection() as conn:
            return int(await conn.fetchval("SELECT COUNT(*) FROM ledger"))

    async def open_reservations(self) -> int:
        async with self._db.connection() as conn:
            return int(await conn.fetchval("SELECT COUNT(*) FROM reservations"))

    async def dump(self) -> AsyncIterator[LedgerRecord]:
        name = LedgerIdentities()
        after: tuple[float, int] = (float("-inf"), 0)
        while True:
            async with self._db.connection() as conn:
                found = await conn.fetch(_ROWS_AFTER, after[0], after[1], _PAGE)
            for row, raw in _valid(found):
                yield LedgerRecord(row, name(row), int(raw["refunded_micros"]), raw["reservation"])
            if not found:
                return
            after = (found[-1]["ts"], int(found[-1]["id"]))

    async def load(self, records: Sequence[LedgerRecord], *, write: bool = True) -> Loaded:
        if not records:
            return Loaded()
        low, high = min(r.row.ts for r in records), max(r.row.ts for r in records)
        copied = present = 0
        async with self._db.transaction() as conn:
            name = LedgerIdentities()
            held = {name(row) for row, _ in _valid(await conn.fetch(_ROWS_BETWEEN, low, high))}
            deltas = []
            for record in records:
                if record.identity in held:
                    present += 1
                    continue
                if write and not await self._insert(conn, record):
                    present += 1  # its reservation was settled here already
                    continue
                r = record.row
                deltas += spend_deltas(r.key_name, r.team, r.ts, r.cost_micros)
                held.add(record.identity)
                copied += 1
            if write:
                await apply_deltas(conn, deltas)  # budget rows last, as every writer does
        return Loaded(copied, present)

    @staticmethod
    async def _insert(conn: Any, record: LedgerRecord) -> bool:
        if not await insert_row(conn, record.row, record.reservation):
            return False
        if record.refunded_micros:
            await conn.execute(
                "UPDATE ledger SET refunded_micros = $1 WHERE id = lastval()",
                record.refunded_micros,
            )
        return True


class PgHoldTransfer:
    def __init__(self, db: PgDatabase, where: str) -> None:
        self._db = db
        self.location = f"postgres circuit holds {where}"

    async def count(self) -> int | None:
        return None

    async def dump(self) -> AsyncIterator[HoldRecord]:
        async with self._db.connection() as conn:
            found = await conn.fetch(
                'SELECT model, reason, since FROM circuit_holds ORDER BY model COLLATE "C"'
            )
        for model, reason, since in found:
            yield HoldRecord(model, reason, since)

    async def load(self, records: Sequence[HoldRecord], *, write: bool = True) -> Loaded:
        copied = 0
        async with self._db.transaction() as conn:
            held = {r[0] for r in await conn.fetch("SELECT model FROM circuit_holds")}
            for hold in records:
                if hold.model in held:
                    continue
                if write:
                    await conn.execute(
                        "INSERT INTO circuit_holds VALUES ($1, $2, $3)",
                        hold.model, hold.reason, hold.since,
                    )  # fmt: skip
                held.add(hold.model)
                copied += 1
        return Loaded(copied, len(records) - copied)


class PgExperimentTransfer:
    """Experiments through the gateway's `PgExperimentStore` (create keeps them whole)."""

    def __init__(self, db: PgDatabase, where: str) -> None:
        self._db = db
        self._store = PgExperimentStore(db)
        self.location = f"postgres experiments {where}"

    async def count(self) -> int | None:
        return None

    async def dump(self) -> AsyncIterator[ExperimentRecord]:
        async with self._db.connection() as conn:
            names = [
                r[0]
                for r in await conn.fetch('SELECT name FROM experiments ORDER BY name COLLATE "C"')
            ]
        for experiment_name in names:
            experiment = await self._store.get(experiment_name)
            if experiment is None:
                continue  # deleted meanwhile
            images = {v.image: await self._store.image(v.image) for v in experiment.variants}
            kept = {sha: data for sha, data in images.items() if data is not None}
            yield ExperimentRecord(experiment, kept)

    async def load(self, records: Sequence[ExperimentRecord], *, write: bool = True) -> Loaded:
        copied = 0
        for record in records:
            if write:
                copied += await self._store.create(record.experiment, record.images)
            else:
                copied += await self._store.get(record.experiment.name) is None
        return Loaded(copied, len(records) - copied)


class PgEventTransfer:
    def __init__(self, db: PgDatabase, where: str) -> None:
        self._db = db
        self.location = f"postgres experiment events {where}"

    async def count(self) -> int | None:
        total = 0
        async with self._db.connection() as conn:
            for table in _TABLES.values():
                total += int(await conn.fetchval(f"SELECT COUNT(*) FROM {table}"))  # noqa: S608  # fixed names
        return total

    async def dump(self) -> AsyncIterator[EventRecord]:
        kinds: tuple[Literal["impression", "conversion"], ...] = ("impression", "conversion")
        for kind in kinds:
            after = ("", "")
            sql = (
                f"SELECT experiment, subject, variant, ts FROM {_TABLES[kind]} "  # noqa: S608  # fixed names
                'WHERE (experiment COLLATE "C", subject COLLATE "C") > ($1, $2) '
                'ORDER BY experiment COLLATE "C", subject COLLATE "C" LIMIT $3'
            )
            while True:
                async with self._db.connection() as conn:
                    found = await conn.fetch(sql, after[0], after[1], _PAGE)
                if not found:
                    break
                for e, s, v, t in found:
                    yield EventRecord(kind, e, s, v, t)
                after = (found[-1][0], found[-1][1])

    async def load(self, records: Sequence[EventRecord], *, write: bool = True) -> Loaded:
        copied = 0
        async with self._db.transaction() as conn:
            for r in records:
                table = _TABLES[r.kind]
                if write:
                    sql = (
                        f"INSERT INTO {table} VALUES ($1, $2, $3, $4) "  # noqa: S608  # fixed names
                        "ON CONFLICT DO NOTHING RETURNING 1"
                    )
                    copied += (
                        await conn.fetchval(sql, r.experiment, r.subject, r.variant, r.ts) == 1
                    )
                else:
                    sql = f"SELECT 1 FROM {table} WHERE experiment = $1 AND subject = $2"  # noqa: S608  # fixed names
                    copied += await conn.fetchval(sql, r.experiment, r.subject) is None
        return Loaded(copied, len(records) - copied)
