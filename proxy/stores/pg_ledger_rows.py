"""The ledger's rows and budget totals on PostgreSQL: what `PgLedger` and the reports share.

`budget_usage` keeps, per budget and window, what settled rows spent and what open
reservations hold. Every change to it goes through `apply_deltas`: one statement that
touches each row once, in one order (scope, name, window, start, by code point) that every
writer shares, so two transactions never wait on each other in a cycle. In a transaction,
the ledger and reservation rows are written first and the budget rows last.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Final

from asyncpg.pool import PoolConnectionProxy

from policies.budget import BudgetSpec, window_bounds
from policies.ledger_models import ORPHANED, LedgerRow

__all__ = [
    "ROW_COLUMNS",
    "Delta",
    "Hold",
    "apply_deltas",
    "draft_json",
    "hold_of",
    "insert_row",
    "orphan_row",
    "record_values",
    "spend_deltas",
]

Hold = tuple[str, str, str, int]  # a budget_usage row: scope, name, window, window start
Delta = tuple[Hold, int, int]  # the row, what to add to `spent`, and to `reserved`

_WINDOWS: Final = ("day", "month", "total")
ROW_COLUMNS: Final = (
    "ts", "key_name", "team", "request_key", "model", "provider", "images", "cost_micros",
    "saved_micros", "cache", "request_id", "requests", "over_quote_micros", "reservation",
)  # fmt: skip
_INSERT: Final = (
    f"INSERT INTO ledger ({', '.join(ROW_COLUMNS)}) "  # noqa: S608  # constant columns
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
    "ON CONFLICT (reservation) DO NOTHING RETURNING id"
)
_APPLY: Final = """
INSERT INTO budget_usage AS b (scope, name, win, start, spent, reserved)
SELECT t.scope, t.name, t.win, t.start, t.spent, t.reserved
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
  WITH ORDINALITY AS t(scope, name, win, start, spent, reserved, i)
ORDER BY t.i
ON CONFLICT (scope, name, win, start)
DO UPDATE SET spent = b.spent + excluded.spent, reserved = b.reserved + excluded.reserved
"""


def hold_of(spec: BudgetSpec, now: float) -> Hold:
    """The budget_usage row of `spec` for the window that contains `now`."""
    name = "" if spec.scope == "global" else spec.name
    return (spec.scope, name, spec.window, int(window_bounds(spec.window, now)[0]))


def spend_deltas(key_name: str | None, team: str | None, ts: float, micros: int) -> list[Delta]:
    """Spend `micros` (negative: take it back) in every budget window a row at `ts` of this
    key and team falls in: global, team and key, each by day, month and total."""
    scopes = [("global", "")]
    if team is not None:
        scopes.append(("team", team))
    if key_name is not None:
        scopes.append(("key", key_name))
    return [
        ((scope, name, win, int(window_bounds(win, ts)[0])), micros, 0)
        for scope, name in scopes
        for win in _WINDOWS
    ]


async def apply_deltas(conn: PoolConnectionProxy, deltas: Iterable[Delta]) -> None:
    """Add the deltas to budget_usage (rows made as needed), each row once, in lock order."""
    summed: dict[Hold, tuple[int, int]] = {}
    for hold, spent, reserved in deltas:
        old = summed.get(hold, (0, 0))
        summed[hold] = (old[0] + spent, old[1] + reserved)
    moving = sorted(h for h, v in summed.items() if v != (0, 0))
    if not moving:
        return
    columns = list(zip(*moving, strict=True))
    await conn.execute(
        _APPLY, *columns, [summed[h][0] for h in moving], [summed[h][1] for h in moving]
    )


def record_values(row: LedgerRow, reservation: str | None) -> tuple[object, ...]:
    """The ledger columns of a row, in `ROW_COLUMNS` order."""
    return (row.ts, row.key_name, row.team, row.request_key, row.model, row.provider,
            row.images, row.cost_micros, row.saved_micros, row.cache, row.request_id,
            row.requests, row.over_quote_micros, reservation)  # fmt: skip


async def insert_row(conn: PoolConnectionProxy, row: LedgerRow, reservation: str | None) -> bool:
    """Insert a row; False when its reservation already has one (nothing written)."""
    return await conn.fetchval(_INSERT, *record_values(row, reservation)) is not None


def draft_json(draft: LedgerRow | None) -> str | None:
    return None if draft is None else json.dumps(dataclasses.asdict(draft))


def orphan_row(
    created: float, amount: int, holds: Sequence[Sequence[object]], draft: str | None
) -> LedgerRow:
    """The row a reservation whose call was cut off is settled as: its draft, charged the
    quote at the time the call went out (without a draft: its key and team, from its holds)."""
    if draft is not None:
        kept = LedgerRow(**json.loads(draft))
        return dataclasses.replace(
            kept, ts=created, cost_micros=amount, saved_micros=0, cache=ORPHANED,
            over_quote_micros=0,
        )  # fmt: skip
    names = {str(h[0]): str(h[1]) for h in holds}
    return LedgerRow(created, names.get("key"), names.get("team"), "", "", "", 0, amount, 0,
                     ORPHANED)  # fmt: skip
