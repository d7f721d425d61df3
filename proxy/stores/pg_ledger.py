"""`Ledger` on PostgreSQL: budget reservations that hold across replicas, and their rows.

A reservation is one conditional statement per budget, in one transaction:

    UPDATE budget_usage SET reserved = reserved + $quote
    WHERE <its row> AND spent + reserved + $quote <= $limit RETURNING reserved

PostgreSQL re-checks the condition on the newest version of a row another transaction just
changed, so however many replicas reserve at once, spend + reserved never passes a limit;
one budget without room rolls the others back (all or nothing). The rows of the windows
are made first (`INSERT … ON CONFLICT DO NOTHING`), never read before they are written.

Spend is settled rows only. Each reservation keeps its owner (a replica) and its created
time; `resolve_orphans` heartbeats the caller in `replicas` and settles the reservations of
owners silent for longer than the lease as ORPHANED rows at their quote, under
`FOR UPDATE SKIP LOCKED`, so two live replicas never settle one twice.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from typing import Final

from asyncpg.pool import PoolConnectionProxy

from policies.budget import BudgetSpec, BudgetUsage, Denied, check_fit
from policies.ledger_models import LedgerRow
from proxy.stores.owners import OwnerState
from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_ledger_rows import (
    ROW_COLUMNS,
    Delta,
    Hold,
    apply_deltas,
    draft_json,
    hold_of,
    insert_row,
    orphan_row,
    record_values,
    spend_deltas,
)

__all__ = ["PgLedger"]

_ATTEMPTS: Final = 3  # a reservation refused, then found to fit, is tried again this often
_OWNERS_KEPT: Final = 86_400.0  # seconds a silent owner without reservations is remembered
_ENSURE: Final = (
    "INSERT INTO budget_usage (scope, name, win, start) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) "
    "ON CONFLICT DO NOTHING"
)
_TAKE: Final = (
    "UPDATE budget_usage SET reserved = reserved + $5 WHERE scope = $1 AND name = $2 "
    "AND win = $3 AND start = $4 AND spent + reserved + $5 <= $6 RETURNING reserved"
)
_HOLD: Final = "INSERT INTO reservations VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)"
_END: Final = (
    "DELETE FROM reservations WHERE id = $1 "
    "RETURNING created, amount_micros, holds::text, draft::text"
)
_USAGE: Final = (
    "SELECT COALESCE(b.spent, 0), COALESCE(b.reserved, 0) FROM unnest($1::text[], $2::text[], "
    "$3::text[], $4::bigint[]) WITH ORDINALITY AS t(scope, name, win, start, i) "
    "LEFT JOIN budget_usage AS b ON b.scope = t.scope AND b.name = t.name "
    "AND b.win = t.win AND b.start = t.start ORDER BY t.i"
)
_HEARTBEAT: Final = (
    "INSERT INTO replicas VALUES ($1, $2) ON CONFLICT (owner) "
    "DO UPDATE SET seen = GREATEST(replicas.seen, excluded.seen)"
)
_FORGET: Final = (
    "DELETE FROM replicas WHERE seen < $1 AND owner NOT IN (SELECT owner FROM reservations)"
)
_OPEN: Final = (
    "SELECT r.id, r.owner, COALESCE(o.seen, r.created) < $1 AS silent FROM reservations AS r "
    "LEFT JOIN replicas AS o ON o.owner = r.owner"
)
_CLAIM: Final = (  # still gone once locked: a heartbeat since the first look keeps them
    "SELECT r.id FROM reservations AS r LEFT JOIN replicas AS o ON o.owner = r.owner "
    "WHERE r.id = ANY($1::text[]) AND (r.owner = ANY($2::text[]) "
    "OR COALESCE(o.seen, r.created) < $3) ORDER BY r.created FOR UPDATE OF r SKIP LOCKED"
)
_ORPHAN_OF: Final = (
    "SELECT id, ts, key_name, team, cost_micros FROM ledger WHERE reservation = $1 "
    "AND cache = 'ORPHANED' AND refunded_micros = 0 FOR UPDATE"
)


class _NoRoom(Exception):
    """A budget had no room: the reservation's transaction rolls back."""


def _unknown(owner: str) -> OwnerState:
    return "unknown"


def _columns(holds: Sequence[Hold]) -> list[list[object]]:
    return [list(c) for c in zip(*holds, strict=True)] if holds else [[], [], [], []]


class PgLedger:
    """`PgLedger(db, state=...)`, `db` a migrated `PgDatabase`.

    `state`: whether an owner is known to be alive or dead beyond its heartbeat. The default
    knows nothing ("unknown": the lease alone decides), which is right across containers,
    where a pid of this host says nothing; `proxy.stores.owners.owner_state` judges the
    owners of this host by /proc, as the embedded ledger does."""

    def __init__(self, db: PgDatabase, state: Callable[[str], OwnerState] = _unknown) -> None:
        self._db = db
        self._state = state

    async def reserve(
        self,
        budgets: Sequence[BudgetSpec],
        amount_micros: int,
        now: float,
        owner: str,
        draft: LedgerRow | None = None,
    ) -> str | Denied:
        if amount_micros < 0:
            raise ValueError(f"a reservation must be >= 0 micro-USD, not {amount_micros}")
        limits: dict[Hold, int] = {}
        for spec in budgets:  # two specs of one row: the tighter limit holds
            hold = hold_of(spec, now)
            limits[hold] = min(limits.get(hold, spec.limit_micros), spec.limit_micros)
        holds = sorted(limits)  # the lock order every writer shares
        usages: list[BudgetUsage] = []
        for _ in range(_ATTEMPTS):
            rid = secrets.token_hex(16)
            if await self._hold(rid, holds, limits, amount_micros, now, owner, draft):
                return rid
            usages = await self.budget_left(budgets, now)  # only to say which budget is full
            decision = check_fit(usages, amount_micros, now)
            if isinstance(decision, Denied):
                return decision
        return _denied_now(usages, amount_micros, now)  # room freed each time we looked

    async def _hold(
        self,
        rid: str,
        holds: Sequence[Hold],
        limits: dict[Hold, int],
        amount: int,
        now: float,
        owner: str,
        draft: LedgerRow | None,
    ) -> bool:
        """One attempt: True when every budget took the amount (and the reservation is in)."""
        async with self._db.connection() as conn:
            await conn.execute(_ENSURE, *_columns(holds))
            try:
                async with conn.transaction():
                    for hold in holds:
                        if await conn.fetchval(_TAKE, *hold, amount, limits[hold]) is None:
                            raise _NoRoom
                    kept = json.dumps([list(h) for h in holds])
                    await conn.execute(_HOLD, rid, owner, now, amount, kept, draft_json(draft))
            except _NoRoom:
                return False
        return True

    async def settle(self, reservation_id: str, row: LedgerRow) -> None:
        """Idempotent; records the row even after a release (the money was spent), and
        replaces the ORPHANED row of a reservation resolved meanwhile."""
        async with self._db.transaction() as conn:
            deltas = await _end(conn, reservation_id)
            if await insert_row(conn, row, reservation_id):
                deltas += spend_deltas(row.key_name, row.team, row.ts, row.cost_micros)
            else:
                deltas += await _replace_orphan(conn, row, reservation_id)
            await apply_deltas(conn, deltas)

    async def release(self, reservation_id: str) -> None:
        async with self._db.transaction() as conn:
            await apply_deltas(conn, await _end(conn, reservation_id))

    async def abandon(self, reservation_id: str) -> LedgerRow | None:
        async with self._db.transaction() as conn:
            return await _orphan(conn, reservation_id)

    async def resolve_orphans(self, owner: str, now: float, lease: float) -> list[LedgerRow]:
        async with self._db.connection() as conn:
            await conn.execute(_HEARTBEAT, owner, now)
            await conn.execute(_FORGET, now - _OWNERS_KEPT)
            found = await conn.fetch(_OPEN, now - lease)
            gone = [r for r in found if self._gone(r["owner"], r["silent"])]
            if not gone:
                return []
            dead = sorted({r["owner"] for r in gone if self._state(r["owner"]) == "dead"})
            async with conn.transaction():
                locked = await conn.fetch(_CLAIM, [r["id"] for r in gone], dead, now - lease)
                claimed = [r["id"] for r in locked]
                orphans = [await _orphan(conn, rid) for rid in claimed]
        return [row for row in orphans if row is not None]

    def _gone(self, owner: str, silent: bool) -> bool:
        state = self._state(owner)
        return state == "dead" or (state == "unknown" and silent)

    async def record(self, rows: Sequence[LedgerRow]) -> None:
        """Hit rows (no money moves) go in with COPY; costed rows add their spend."""
        free = [record_values(r, None) for r in rows if not r.cost_micros]
        costed = [r for r in rows if r.cost_micros]
        async with self._db.transaction() as conn:
            if free:
                await conn.copy_records_to_table("ledger", records=free, columns=ROW_COLUMNS)
            deltas: list[Delta] = []
            for row in costed:
                await insert_row(conn, row, None)
                deltas += spend_deltas(row.key_name, row.team, row.ts, row.cost_micros)
            await apply_deltas(conn, deltas)

    async def budget_left(self, budgets: Sequence[BudgetSpec], now: float) -> list[BudgetUsage]:
        holds = [hold_of(spec, now) for spec in budgets]
        async with self._db.connection() as conn:
            found = await conn.fetch(_USAGE, *_columns(holds))
        return [BudgetUsage(s, int(r[0]), int(r[1])) for s, r in zip(budgets, found, strict=True)]


async def _end(conn: PoolConnectionProxy, reservation_id: str) -> list[Delta]:
    """Delete an open reservation; the deltas that free what it held (none if not open)."""
    found = await conn.fetchrow(_END, reservation_id)
    if found is None:
        return []
    amount = int(found["amount_micros"])
    return [((str(s), str(n), str(w), int(t)), 0, -amount) for s, n, w, t in json.loads(found[2])]


async def _orphan(conn: PoolConnectionProxy, reservation_id: str) -> LedgerRow | None:
    """End an open reservation as an ORPHANED row at its quote; None if it is not open."""
    found = await conn.fetchrow(_END, reservation_id)
    if found is None:
        return None
    created, amount, holds_json, draft = found
    holds = json.loads(holds_json)
    row = orphan_row(created, amount, holds, draft)
    deltas: list[Delta] = [((str(s), str(n), str(w), int(t)), 0, -amount) for s, n, w, t in holds]
    if await insert_row(conn, row, reservation_id):
        deltas += spend_deltas(row.key_name, row.team, row.ts, row.cost_micros)
    await apply_deltas(conn, deltas)
    return row


async def _replace_orphan(conn: PoolConnectionProxy, row: LedgerRow, rid: str) -> list[Delta]:
    """A late settle: the true row replaces an unrefunded ORPHANED row of `rid`."""
    old = await conn.fetchrow(_ORPHAN_OF, rid)
    if old is None:
        return []
    await conn.execute("DELETE FROM ledger WHERE id = $1", old["id"])
    await insert_row(conn, row, rid)
    return [
        *spend_deltas(old["key_name"], old["team"], old["ts"], -int(old["cost_micros"])),
        *spend_deltas(row.key_name, row.team, row.ts, row.cost_micros),
    ]


def _denied_now(usages: Sequence[BudgetUsage], amount: int, now: float) -> Denied:
    """A refusal when the budgets kept changing under three attempts: the tightest one,
    shown as full, so the message still says which budget and what the call may cost."""
    tightest = min(usages, key=lambda u: u.spec.limit_micros - u.used_micros)
    full = BudgetUsage(tightest.spec, tightest.spent_micros, tightest.spec.limit_micros)
    decision = check_fit([full], max(amount, 1), now)
    assert isinstance(decision, Denied)
    return Denied(tightest, amount, decision.error)
