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
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import socket
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from policies.budget import BudgetSpec, BudgetUsage, Denied, Window, check_fit, window_bounds
from policies.ledger_models import HIT_OUTCOMES, LedgerRow
from proxy.stores.ledger_keys import KeyTable

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

_WINDOWS: Final[tuple[Window, ...]] = ("day", "month", "total")
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
ROW_COLUMNS: Final = (
    "ts, key_name, team, request_key, model, provider, images, cost_micros, saved_micros, "
    "cache, request_id, requests"
)
# A row that adds no spend (a hit's): no reservation, no running totals to update.
FREE_ROW_INSERT: Final = (
    f"INSERT OR IGNORE INTO ledger ({ROW_COLUMNS}, reservation) "  # noqa: S608  # constant columns
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
)
_RESERVED: Final = (
    "SELECT COALESCE(SUM(r.amount_micros), 0) FROM reservations AS r, "
    "json_each(r.scopes_json) AS j WHERE j.value = ?"
)
_UPSERT_SPEND: Final = (
    "INSERT INTO spend VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, name, win, start) "
    "DO UPDATE SET micros = micros + excluded.micros"
)


def _scope_of(spec: BudgetSpec) -> tuple[str, str]:
    return (spec.scope, "") if spec.scope == "global" else (spec.scope, spec.name)


def _row_scopes(row: LedgerRow) -> list[tuple[str, str]]:
    scopes = [("global", "")]
    if row.team is not None:
        scopes.append(("team", row.team))
    if row.key_name is not None:
        scopes.append(("key", row.key_name))
    return scopes


class SqliteLedger(KeyTable):
    """Keys, reservations and the spend ledger in `path` (e.g. `data_dir/ledger.sqlite3`).

    `SqliteLedger(path, busy_timeout=30.0)`. Methods are synchronous and thread-safe (one
    connection behind a lock); the service calls them through `asyncio.to_thread`. Several
    processes may open the same file. The key methods come from `KeyTable`.
    """

    # -- budgets ---------------------------------------------------------------------------

    def _usage(self, db: sqlite3.Connection, spec: BudgetSpec, now: float) -> BudgetUsage:
        scope, name = _scope_of(spec)
        start = int(window_bounds(spec.window, now)[0])
        found = db.execute(
            "SELECT micros FROM spend WHERE scope = ? AND name = ? AND win = ? AND start = ?",
            (scope, name, spec.window, start),
        ).fetchone()
        reserved = db.execute(_RESERVED, (f"{scope}:{name}",)).fetchone()[0]
        return BudgetUsage(spec, 0 if found is None else found[0], reserved)

    def reserve(
        self, budgets: Sequence[BudgetSpec], amount_micros: int, now: float, owner: str
    ) -> str | Denied:
        """Reserve `amount_micros` on every budget, all or nothing; the reservation id."""
        with self._write() as db:
            decision = check_fit([self._usage(db, b, now) for b in budgets], amount_micros, now)
            if isinstance(decision, Denied):
                return decision
            reservation = secrets.token_hex(16)
            scopes = sorted({":".join(_scope_of(b)) for b in budgets})
            db.execute(
                "INSERT INTO reservations VALUES (?, ?, ?, ?, ?)",
                (reservation, owner, now, amount_micros, json.dumps(scopes)),
            )
            return reservation

    def _insert(self, db: sqlite3.Connection, row: LedgerRow, reservation: str | None) -> None:
        inserted = db.execute(
            f"INSERT OR IGNORE INTO ledger ({ROW_COLUMNS}, reservation) "  # noqa: S608  # constant columns
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row_values(row), reservation),
        ).rowcount
        if inserted == 0 or row.cost_micros == 0:
            return  # already settled (a retried settle), or nothing to add to the totals
        for scope, name in _row_scopes(row):
            for window in _WINDOWS:
                start = int(window_bounds(window, row.ts)[0])
                db.execute(_UPSERT_SPEND, (scope, name, window, start, row.cost_micros))

    def settle(self, reservation_id: str, row: LedgerRow) -> None:
        """Drop the reservation and record what the call actually cost, in one commit.

        Idempotent per reservation id, and still records the row if the reservation was
        already released (the money was spent either way)."""
        with self._write() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            self._insert(db, row, reservation_id)

    def release(self, reservation_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

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

    def release_orphans(self, is_alive: Callable[[str], bool] | None = None) -> int:
        """Release every reservation whose owner process is gone; how many were released."""
        alive = owner_alive if is_alive is None else is_alive
        with self._read() as db:
            owners = [r[0] for r in db.execute("SELECT DISTINCT owner FROM reservations")]
        dead = [owner for owner in owners if not alive(owner)]
        # A dead owner cannot add reservations, so deleting outside the read is race-free.
        with self._write() as db:
            return sum(
                db.execute("DELETE FROM reservations WHERE owner = ?", (o,)).rowcount for o in dead
            )

    def release_expired(self, created_before: float) -> int:
        """Release reservations older than any call can run (e.g. owners on other hosts)."""
        with self._write() as db:
            sql = "DELETE FROM reservations WHERE created < ?"
            return db.execute(sql, (created_before,)).rowcount

    def open_reservations(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])

    # -- reports ---------------------------------------------------------------------------

    def budget_left(self, budgets: Sequence[BudgetSpec], now: float) -> list[BudgetUsage]:
        with self._read() as db:
            return [self._usage(db, spec, now) for spec in budgets]

    def spend_by(self, group: Group, since: float | None = None) -> list[dict[str, Any]]:
        """Spend, savings, images, hits and misses per key, team, model or UTC day."""
        order = "1" if group == "day" else "2 DESC, 1"
        sql = (
            f"SELECT {_GROUPS[group]}, SUM(cost_micros), SUM(saved_micros), SUM(images), "  # noqa: S608  # fixed expressions
            f"SUM({_HITS}), SUM(requests) FROM ledger WHERE ? IS NULL OR ts >= ? "
            f"GROUP BY 1 ORDER BY {order}"
        )
        with self._read() as db:
            found = db.execute(sql, (since, since)).fetchall()
        fields = (group, "spend_micros", "saved_micros", "images", "hits")
        return [{**dict(zip(fields, r[:5], strict=True)), "misses": r[5] - r[4]} for r in found]

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


# -- reservation owners --------------------------------------------------------------------


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat),
    or None when there is no such running process (gone, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just isn't ours
    return True


def process_owner() -> str:
    """This process as a reservation owner: "host:pid:start", start from /proc ("-" if none).

    Computed per pid, so a forked child never reuses its parent's identity."""
    return _owner_of(os.getpid())


@functools.cache
def _owner_of(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or '-'}"


def owner_alive(owner: str) -> bool:
    """Is the process that wrote `owner` (see `process_owner`) still running?

    The start time tells a reused pid from the original process. An owner on another host
    counts as alive (we cannot look): release those with `release_expired` instead."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return True
    if not pid_text.isdigit():
        return False  # not written by `process_owner`
    pid = int(pid_text)
    if start == "-" or not Path("/proc/self/stat").exists():
        return _pid_running(pid)
    return _proc_start(pid) == start


def row_values(row: LedgerRow) -> tuple[object, ...]:
    """The ledger columns of a row, in `ROW_COLUMNS` order."""
    return (row.ts, row.key_name, row.team, row.request_key, row.model, row.provider,
            row.images, row.cost_micros, row.saved_micros, row.cache, row.request_id,
            row.requests)  # fmt: skip
