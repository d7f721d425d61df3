"""`LedgerReports` and `CircuitHolds` on PostgreSQL: what the admin routes, the dashboard and
/metrics read from the ledger, refunds of orphaned rows, and models stopped for every
replica until an operator releases them. The same answers as `SqliteLedgerPort`'s."""

from __future__ import annotations

from typing import Any, Final, Literal

from policies.errors import InvalidRequest
from policies.ledger_models import HIT_OUTCOMES, ORPHANED, LedgerRow
from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_ledger_rows import ROW_COLUMNS, apply_deltas, spend_deltas

__all__ = ["PgCircuitHolds", "PgLedgerReports"]

Group = Literal["key", "team", "model", "day"]

_HITS: Final = "CASE WHEN cache IN ({}) THEN requests ELSE 0 END".format(
    ", ".join(f"'{o}'" for o in HIT_OUTCOMES)
)
_GROUPS: Final[dict[str, str]] = {
    "key": "key_name",
    "team": "team",
    "model": "model",
    "day": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
_SINCE: Final = "$1::double precision IS NULL OR ts >= $1"
_ROW_FIELDS: Final = ", ".join(ROW_COLUMNS[:12])  # a LedgerRow's fields, over-quote aside
_MONEY: Final = (
    "SELECT COALESCE(SUM(cost_micros), 0)::bigint, COALESCE(SUM(over_quote_micros), 0)::bigint, "  # noqa: S608  # constant
    f"COUNT(*) FILTER (WHERE cache = '{ORPHANED}'), "
    f"COALESCE(SUM(cost_micros) FILTER (WHERE cache = '{ORPHANED}'), 0)::bigint, "
    "COALESCE(SUM(refunded_micros), 0)::bigint FROM ledger"
)


class PgLedgerReports:
    """`PgLedgerReports(db)`, `db` a migrated `PgDatabase`."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def spend_by(self, group: Group, since: float | None = None) -> list[dict[str, Any]]:
        # ties in the order SQLite gives them: by code point, NULL first
        order = "1" if group == "day" else f'2 DESC, {_GROUPS[group]} COLLATE "C" NULLS FIRST'
        sql = (
            f"SELECT {_GROUPS[group]}, SUM(cost_micros)::bigint, SUM(saved_micros)::bigint, "  # noqa: S608  # fixed expressions
            f"SUM(images)::bigint, SUM({_HITS})::bigint, SUM(over_quote_micros)::bigint, "
            f"COUNT(*) FILTER (WHERE cache = '{ORPHANED}'), SUM(requests)::bigint "
            f"FROM ledger WHERE {_SINCE} GROUP BY 1 ORDER BY {order}"
        )
        async with self._db.connection() as conn:
            found = await conn.fetch(sql, since)
        fields = (group, "spend_micros", "saved_micros", "images", "hits", "over_quote_micros",
                  "orphaned")  # fmt: skip
        return [{**dict(zip(fields, r[:7], strict=True)), "misses": r[7] - r[4]} for r in found]

    async def totals(self, since: float | None = None) -> dict[str, Any]:
        ratio = f"SELECT SUM({_HITS})::bigint, SUM(requests)::bigint FROM ledger WHERE {_SINCE}"  # noqa: S608  # constant
        async with self._db.connection() as conn:
            counted = await conn.fetchrow(ratio, since)
            reserved = await conn.fetchval("SELECT COUNT(*) FROM reservations")
            money = await conn.fetchrow(_MONEY)
        assert counted is not None  # an aggregate: always one row
        assert money is not None
        hits, total = counted
        fields = ("spend_micros", "over_quote_micros", "orphaned", "orphaned_micros",
                  "refunded_micros")  # fmt: skip
        return {
            "hit_ratio": None if not total else hits / total,
            "open_reservations": int(reserved),
            **{f: int(v) for f, v in zip(fields, money, strict=True)},
        }

    async def rows(self, limit: int = 50, offset: int = 0) -> list[LedgerRow]:
        sql = f"SELECT {_ROW_FIELDS} FROM ledger ORDER BY id DESC LIMIT $1 OFFSET $2"  # noqa: S608  # constant
        async with self._db.connection() as conn:
            return [LedgerRow(*r) for r in await conn.fetch(sql, limit, offset)]

    async def over_quote_by_model(self) -> list[tuple[str, str, int]]:
        sql = (
            "SELECT provider, model, SUM(over_quote_micros)::bigint FROM ledger "
            "WHERE over_quote_micros > 0 GROUP BY 1, 2 ORDER BY 1, 2"
        )
        async with self._db.connection() as conn:
            return [(r[0], r[1], int(r[2])) for r in await conn.fetch(sql)]

    async def orphans(self, limit: int = 100) -> list[dict[str, object]]:
        sql = (
            "SELECT id, ts, key_name, team, model, provider, images, cost_micros, "
            "refunded_micros, request_id FROM ledger WHERE cache = $1 ORDER BY ts DESC LIMIT $2"
        )
        fields = ("id", "ts", "key", "team", "model", "provider", "images", "cost_micros",
                  "refunded_micros", "request_id")  # fmt: skip
        async with self._db.connection() as conn:
            found = await conn.fetch(sql, ORPHANED, limit)
        return [dict(zip(fields, r, strict=True)) for r in found]

    async def refund(self, row_id: int) -> tuple[int, bool] | None:
        """Refund an orphaned row (its cost leaves the spend); (amount, whether this call did
        it), None when there is no such row. Idempotent; only orphaned rows refund."""
        async with self._db.transaction() as conn:
            found = await conn.fetchrow(
                "SELECT ts, key_name, team, cost_micros, refunded_micros, cache FROM ledger "
                "WHERE id = $1 FOR UPDATE",
                row_id,
            )
            if found is None:
                return None
            ts, key_name, team, cost, refunded, cache = found
            if cache != ORPHANED:
                raise InvalidRequest(
                    f"Ledger row {row_id} is not an orphaned row; only those can be refunded.",
                    code="not_refundable",
                )
            if refunded or not cost:
                return int(refunded), False
            await conn.execute(
                "UPDATE ledger SET cost_micros = 0, refunded_micros = $1 WHERE id = $2",
                cost,
                row_id,
            )
            await apply_deltas(conn, spend_deltas(key_name, team, ts, -int(cost)))
        return int(cost), True


class PgCircuitHolds:
    """`PgCircuitHolds(db)`: the `circuit_holds` table, shared by every replica."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def hold_model(self, model: str, reason: str, now: float) -> None:
        sql = "INSERT INTO circuit_holds VALUES ($1, $2, $3) ON CONFLICT (model) DO NOTHING"
        async with self._db.connection() as conn:
            await conn.execute(sql, model, reason, now)

    async def release_hold(self, model: str) -> bool:
        async with self._db.connection() as conn:
            done = await conn.execute("DELETE FROM circuit_holds WHERE model = $1", model)
        return str(done) == "DELETE 1"

    async def holds(self) -> dict[str, str]:
        async with self._db.connection() as conn:
            return {r[0]: r[1] for r in await conn.fetch("SELECT model, reason FROM circuit_holds")}
