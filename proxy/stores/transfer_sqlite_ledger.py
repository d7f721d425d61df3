"""`KeyTransfer`, `LedgerTransfer` and `HoldTransfer` over the embedded ledger database
(`data_dir/ledger.sqlite3`), read and written by `LedgerFile`, the gateway's `SqliteLedger`
with the queries a migration needs.

A copied ledger row goes through the gateway's own insert (`LedgerBook._insert`), which adds
its cost to the running spend totals in the same commit, so budgets and reports on the
target count it as the source did. A batch of rows is one transaction: a killed run leaves
whole batches, and the next run skips them by identity (`records.LedgerIdentities`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, Final

from policies.ledger_models import LedgerRow
from proxy.migration.records import HoldRecord, KeyRow, LedgerIdentities, LedgerRecord, Loaded
from proxy.stores.ledger import ROW_COLUMNS, SqliteLedger

__all__ = ["LedgerFile", "SqliteHoldTransfer", "SqliteKeyTransfer", "SqliteLedgerTransfer"]

_PAGE: Final = 1000
_FULL_ROW: Final = f"{ROW_COLUMNS}, over_quote_micros, id, refunded_micros, reservation"
_ROWS_AFTER: Final = (
    f"SELECT {_FULL_ROW} FROM ledger WHERE ts > ? OR (ts = ? AND id > ?) "  # noqa: S608  # constant
    "ORDER BY ts, id LIMIT ?"
)
_ROWS_BETWEEN: Final = f"SELECT {_FULL_ROW} FROM ledger WHERE ts BETWEEN ? AND ? ORDER BY ts, id"  # noqa: S608  # constant
_KEY_INSERT: Final = (
    "INSERT INTO api_keys (name, team, created, revoked, budget_micros, budget_window, "
    "requests_per_minute, images_per_minute, models_json, source, key_hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_LEDGER_COLUMNS: Final = 13  # the LedgerRow fields, in `_FULL_ROW` order


_Found = tuple[LedgerRow, int, str | None]  # a row, its refunded_micros and reservation


def _valid(found: Iterable[Sequence[Any]]) -> Iterator[tuple[LedgerRow, Sequence[Any]]]:
    """Each raw row with its `LedgerRow`; a row that is not a valid one (edited by hand) is
    left out, and so never copied."""
    for raw in found:
        try:
            yield LedgerRow(*raw[:_LEDGER_COLUMNS]), raw
        except (TypeError, ValueError):
            continue


class LedgerFile(SqliteLedger):
    """The ledger database with the reads and writes of a migration (all synchronous)."""

    def key_rows(self) -> list[KeyRow]:
        with self._read() as db:
            hashes = db.execute("SELECT name, key_hash FROM api_keys ORDER BY name").fetchall()
        rows = [(self.get_key(name), digest) for name, digest in hashes]
        return [KeyRow(record, digest) for record, digest in rows if record is not None]

    def add_keys(self, keys: Sequence[KeyRow], write: bool) -> Loaded:
        copied = present = taken = 0
        with self._write() as db:
            names = {r[0] for r in db.execute("SELECT name FROM api_keys")}
            hashes = {r[0] for r in db.execute("SELECT key_hash FROM api_keys")}
            for key in keys:
                if key.record.name in names:
                    present += 1
                elif key.secret_sha256 in hashes:
                    taken += 1
                else:
                    if write:
                        db.execute(_KEY_INSERT, _key_values(key))
                    names.add(key.record.name)
                    hashes.add(key.secret_sha256)
                    copied += 1
        return Loaded(copied, present, {"its secret is another key's in the target": taken}
                      if taken else {})  # fmt: skip

    def row_count(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])

    def row_page(self, after: tuple[float, int]) -> tuple[list[_Found], tuple[float, int]]:
        """(row, refunded_micros, reservation) after (ts, id) in (ts, id) order, and where
        the page ends (`after` itself at the end)."""
        with self._read() as db:
            found = db.execute(_ROWS_AFTER, (after[0], after[0], after[1], _PAGE)).fetchall()
        rows = [(row, int(raw[14]), raw[15]) for row, raw in _valid(found)]
        return rows, ((found[-1][0], int(found[-1][13])) if found else after)

    def add_rows(self, records: Sequence[LedgerRecord], write: bool) -> Loaded:
        """Insert the records whose identity the ledger lacks, in one transaction."""
        if not records:
            return Loaded()
        low = min(r.row.ts for r in records)
        high = max(r.row.ts for r in records)
        copied = present = 0
        with self._write() as db:
            name = LedgerIdentities()
            held = {name(row) for row, _ in _valid(db.execute(_ROWS_BETWEEN, (low, high)))}
            for record in records:
                if record.identity in held or not self._add_row(db, record, write):
                    present += 1
                else:
                    held.add(record.identity)
                    copied += 1
        return Loaded(copied, present)

    def _add_row(self, db: sqlite3.Connection, record: LedgerRecord, write: bool) -> bool:
        """False when the row's reservation was settled in this ledger already."""
        if not write:
            return True
        if not self._insert(db, record.row, record.reservation):
            return False
        if record.refunded_micros:
            db.execute(
                "UPDATE ledger SET refunded_micros = ? WHERE id = last_insert_rowid()",
                (record.refunded_micros,),
            )
        return True

    def hold_rows(self) -> list[HoldRecord]:
        with self._read() as db:
            found = db.execute("SELECT model, reason, since FROM circuit_holds ORDER BY model")
            return [HoldRecord(str(m), str(r), float(s)) for m, r, s in found]

    def add_holds(self, holds: Sequence[HoldRecord], write: bool) -> Loaded:
        copied = 0
        with self._write() as db:
            held = {r[0] for r in db.execute("SELECT model FROM circuit_holds")}
            for hold in holds:
                if hold.model not in held:
                    if write:
                        db.execute(
                            "INSERT INTO circuit_holds VALUES (?, ?, ?)",
                            (hold.model, hold.reason, hold.since),
                        )
                    held.add(hold.model)
                    copied += 1
        return Loaded(copied, len(holds) - copied)


def _key_values(key: KeyRow) -> tuple[object, ...]:
    r = key.record
    models = None if r.models is None else json.dumps(list(r.models))
    return (r.name, r.team, r.created, r.revoked, r.budget_micros, r.budget_window,
            r.requests_per_minute, r.images_per_minute, models, r.source,
            key.secret_sha256)  # fmt: skip


class SqliteKeyTransfer:
    def __init__(self, ledger: LedgerFile) -> None:
        self._db = ledger
        self.location = f"embedded keys {ledger.path.resolve()}"

    async def count(self) -> int | None:
        return None  # keys are few: the dump reads them all at once

    async def dump(self) -> AsyncIterator[KeyRow]:
        for key in await asyncio.to_thread(self._db.key_rows):
            yield key

    async def load(self, records: Sequence[KeyRow], *, write: bool = True) -> Loaded:
        return await asyncio.to_thread(self._db.add_keys, records, write)


class SqliteLedgerTransfer:
    def __init__(self, ledger: LedgerFile) -> None:
        self._db = ledger
        self.location = f"embedded ledger {ledger.path.resolve()}"

    async def count(self) -> int | None:
        return await asyncio.to_thread(self._db.row_count)

    async def open_reservations(self) -> int:
        return await asyncio.to_thread(self._db.open_reservations)

    async def dump(self) -> AsyncIterator[LedgerRecord]:
        name = LedgerIdentities()
        after = (float("-inf"), 0)
        while True:
            rows, end = await asyncio.to_thread(self._db.row_page, after)
            for row, refunded, reservation in rows:
                yield LedgerRecord(row, name(row), refunded, reservation)
            if end == after:
                return
            after = end

    async def load(self, records: Sequence[LedgerRecord], *, write: bool = True) -> Loaded:
        return await asyncio.to_thread(self._db.add_rows, records, write)


class SqliteHoldTransfer:
    def __init__(self, ledger: LedgerFile) -> None:
        self._db = ledger
        self.location = f"embedded circuit holds {ledger.path.resolve()}"

    async def count(self) -> int | None:
        return None

    async def dump(self) -> AsyncIterator[HoldRecord]:
        for hold in await asyncio.to_thread(self._db.hold_rows):
            yield hold

    async def load(self, records: Sequence[HoldRecord], *, write: bool = True) -> Loaded:
        return await asyncio.to_thread(self._db.add_holds, records, write)
