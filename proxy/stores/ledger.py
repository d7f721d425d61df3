"""The durable ledger: API keys (hashed), budget reservations and spend rows, in SQLite.

One database file shared by every worker process. Durability: WAL with `synchronous=FULL`,
so a commit is fsynced before it returns and a settled row survives `kill -9` and power
loss. Exactness across processes: `reserve` reads and writes in one `BEGIN IMMEDIATE`
transaction, which holds SQLite's single write lock, so two processes can never both see
the same room in a budget (the second waits, up to `busy_timeout`, then sees the first).

Spend per budget is kept as running totals in `spend(scope, name, win, start, micros)`,
updated in the same transaction as the ledger insert, one row per (global | team | key)
x (day | month | total) window that the row falls in. A reservation then reads O(1) rows
under the write lock however long the ledger grows (summing a month of a busy global
budget from `ledger` would hold the lock for as long as the scan takes). The ledger keeps
(ts), (key_name, ts) and (team, ts) indexes for the reports.

Open reservations are few (one per request in flight); each lists the budgets it holds
(`scopes_json`, e.g. `["global:", "key:web-app"]`) and is summed per budget with json_each.
Reserving, settling, orphans and refunds are `proxy.stores.ledger_book`; this module adds
the reports and the circuit holds (a model stopped until an operator resets it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

from policies.budget import BudgetSpec, BudgetUsage
from policies.ledger_models import HIT_OUTCOMES, ORPHANED, LedgerRow
from proxy.stores.ledger_book import FREE_ROW_INSERT, ROW_COLUMNS, LedgerBook, row_values
from proxy.stores.owners import owner_alive, process_owner

__all__ = [
    "FREE_ROW_INSERT",
    "ROW_COLUMNS",
    "Group",
    "SqliteLedger",
    "owner_alive",
    "process_owner",
    "row_values",
]

Group = Literal["key", "team", "model", "day"]

# Requests answered without an upstream call, and all requests (a row may count several).
_HITS: Final = "CASE WHEN cache IN ({}) THEN requests ELSE 0 END".format(
    ", ".join(f"'{o}'" for o in HIT_OUTCOMES)
)
_GROUPS: Final[dict[str, str]] = {
    "key": "key_name",
    "team": "team",
    "model": "model",
    "day": "strftime('%Y-%m-%d', ts, 'unixepoch')",
}


class SqliteLedger(LedgerBook):
    """Keys, reservations and the spend ledger in `path` (e.g. `data_dir/ledger.sqlite3`).

    `SqliteLedger(path, busy_timeout=30.0)`. Methods are synchronous and thread-safe (one
    connection behind a lock); the service calls them through `asyncio.to_thread`. Several
    processes may open the same file. The key methods come from `KeyTable`, the money moves
    from `LedgerBook`.
    """

    def record(self, row: LedgerRow) -> None:
        """A row with no reservation: a cache hit (cost 0, saved = what it would have cost)."""
        self.record_many([row])

    def record_free(self, values: Sequence[tuple[object, ...]]) -> None:
        """Rows that move no money, as `row_values` tuples, in one commit."""
        with self._write() as db:
            db.executemany(FREE_ROW_INSERT, values)

    def record_many(self, rows: Sequence[LedgerRow]) -> None:
        """Several rows without reservations in one commit (hits are written in batches)."""
        free = [row for row in rows if row.cost_micros == 0]  # hits: no spend totals to add
        with self._write() as db:
            db.executemany(FREE_ROW_INSERT, [row_values(row) for row in free])
            for row in rows:
                if row.cost_micros != 0:
                    self._insert(db, row, None)

    def checkpoint(self) -> None:
        """Fold the WAL into the database without blocking anyone (hit rows, written by a
        connection that never checkpoints, would otherwise grow it without end)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- reports ---------------------------------------------------------------------------

    def budget_left(self, budgets: Sequence[BudgetSpec], now: float) -> list[BudgetUsage]:
        with self._read() as db:
            return [self._usage(db, spec, now) for spec in budgets]

    def spend_by(self, group: Group, since: float | None = None) -> list[dict[str, Any]]:
        """Spend, savings, images, hits and misses per key, team, model or UTC day; with
        what upstreams billed beyond their quotes and the orphaned calls among the misses."""
        order = "1" if group == "day" else "2 DESC, 1"
        sql = (
            f"SELECT {_GROUPS[group]}, SUM(cost_micros), SUM(saved_micros), SUM(images), "  # noqa: S608  # fixed expressions
            f"SUM({_HITS}), SUM(over_quote_micros), SUM(cache = '{ORPHANED}'), SUM(requests) "
            f"FROM ledger WHERE ? IS NULL OR ts >= ? GROUP BY 1 ORDER BY {order}"
        )
        with self._read() as db:
            found = db.execute(sql, (since, since)).fetchall()
        fields = (group, "spend_micros", "saved_micros", "images", "hits", "over_quote_micros",
                  "orphaned")  # fmt: skip
        return [{**dict(zip(fields, r[:7], strict=True)), "misses": r[7] - r[4]} for r in found]

    def hit_ratio(self, since: float | None = None) -> float | None:
        """Share of requests that were hits, or None when there are none yet."""
        sql = f"SELECT SUM({_HITS}), SUM(requests) FROM ledger WHERE ? IS NULL OR ts >= ?"  # noqa: S608  # constant
        with self._read() as db:
            hits, total = db.execute(sql, (since, since)).fetchone()
        return None if not total else hits / total

    def rows(self, limit: int = 50, offset: int = 0) -> list[LedgerRow]:
        """The newest rows first (for the gallery)."""
        sql = f"SELECT {ROW_COLUMNS} FROM ledger ORDER BY id DESC LIMIT ? OFFSET ?"  # noqa: S608  # constant
        with self._read() as db:
            return [LedgerRow(*r) for r in db.execute(sql, (limit, offset))]

    def total_spend(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COALESCE(SUM(cost_micros), 0) FROM ledger").fetchone()[0])

    def money_totals(self) -> dict[str, int]:
        """All-time totals: spend, over-quote, orphaned (count, still charged, refunded)."""
        sql = (
            "SELECT COALESCE(SUM(cost_micros), 0), COALESCE(SUM(over_quote_micros), 0), "
            "COALESCE(SUM(cache = ?), 0), COALESCE(SUM(CASE WHEN cache = ? THEN cost_micros "
            "END), 0), COALESCE(SUM(refunded_micros), 0) FROM ledger"
        )
        fields = ("spend_micros", "over_quote_micros", "orphaned", "orphaned_micros",
                  "refunded_micros")  # fmt: skip
        with self._read() as db:
            found = db.execute(sql, (ORPHANED, ORPHANED)).fetchone()
        return {f: int(v) for f, v in zip(fields, found, strict=True)}

    def over_quote_by_model(self) -> list[tuple[str, str, int]]:
        """(provider, model, micro-USD) billed beyond quotes, for the metric."""
        sql = (
            "SELECT provider, model, SUM(over_quote_micros) FROM ledger "
            "WHERE over_quote_micros > 0 GROUP BY 1, 2"
        )
        with self._read() as db:
            return [(r[0], r[1], int(r[2])) for r in db.execute(sql)]

    # -- circuit holds ---------------------------------------------------------------------

    def hold_model(self, model: str, reason: str, now: float) -> None:
        """Stop `model` until `release_hold` (the first reason is kept)."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO circuit_holds VALUES (?, ?, ?)", (model, reason, now))

    def release_hold(self, model: str) -> bool:
        with self._write() as db:
            sql = "DELETE FROM circuit_holds WHERE model = ?"
            return db.execute(sql, (model,)).rowcount == 1

    def holds(self) -> dict[str, str]:
        with self._read() as db:
            return {r[0]: r[1] for r in db.execute("SELECT model, reason FROM circuit_holds")}
