"""The ledger's money moves: reservations, settled rows, orphans and refunds.

`proxy.stores.ledger.SqliteLedger` builds on `LedgerBook`; use that class, not this one.

A reservation holds a call's worst-case quote on every budget that applies, with the row the
call would be settled as (`draft_json`) and the process that holds it (`owner`). It ends one
of three ways, each in one commit:

    settle   the call came back: its row, charged at most the reservation
    release  the call failed upstream before anything was billed: nothing is charged
    orphan   its process died (`resolve_orphans`): settled at the quote as an `ORPHANED` row,
             because the call may have been billed upstream; an admin can `refund` it

Spend is the ledger's rows only; open reservations never count as spend.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from typing import Final

from policies.budget import BudgetSpec, BudgetUsage, Denied, Window, check_fit, window_bounds
from policies.errors import InvalidRequest
from policies.ledger_models import ORPHANED, LedgerRow
from proxy.stores.ledger_keys import KeyTable
from proxy.stores.owners import OwnerState, owner_state

__all__ = ["FREE_ROW_INSERT", "ROW_COLUMNS", "LedgerBook", "row_values"]

_WINDOWS: Final[tuple[Window, ...]] = ("day", "month", "total")
ROW_COLUMNS: Final = (
    "ts, key_name, team, request_key, model, provider, images, cost_micros, saved_micros, "
    "cache, request_id, requests"
)
# A row that adds no spend (a hit's): no reservation, no running totals to update.
FREE_ROW_INSERT: Final = (
    f"INSERT OR IGNORE INTO ledger ({ROW_COLUMNS}, reservation) "  # noqa: S608  # constant columns
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
)
_SPEND_ROW_INSERT: Final = (
    f"INSERT OR IGNORE INTO ledger ({ROW_COLUMNS}, over_quote_micros, reservation) "  # noqa: S608  # constant columns
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RESERVED: Final = (
    "SELECT COALESCE(SUM(r.amount_micros), 0) FROM reservations AS r, "
    "json_each(r.scopes_json) AS j WHERE j.value = ?"
)
_UPSERT_SPEND: Final = (
    "INSERT INTO spend VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, name, win, start) "
    "DO UPDATE SET micros = micros + excluded.micros"
)
_OWNERS_KEPT: Final = 86_400.0  # seconds a silent owner without reservations is remembered


def row_values(row: LedgerRow) -> tuple[object, ...]:
    """The ledger columns of a row, in `ROW_COLUMNS` order."""
    return (row.ts, row.key_name, row.team, row.request_key, row.model, row.provider,
            row.images, row.cost_micros, row.saved_micros, row.cache, row.request_id,
            row.requests)  # fmt: skip


def _scope_of(spec: BudgetSpec) -> tuple[str, str]:
    return (spec.scope, "") if spec.scope == "global" else (spec.scope, spec.name)


def _row_scopes(key_name: str | None, team: str | None) -> list[tuple[str, str]]:
    scopes = [("global", "")]
    if team is not None:
        scopes.append(("team", team))
    if key_name is not None:
        scopes.append(("key", key_name))
    return scopes


def _add_spend(
    db: sqlite3.Connection, key_name: str | None, team: str | None, ts: float, micros: int
) -> None:
    """Move the running totals of every budget window the row at `ts` falls in."""
    for scope, name in _row_scopes(key_name, team):
        for window in _WINDOWS:
            start = int(window_bounds(window, ts)[0])
            db.execute(_UPSERT_SPEND, (scope, name, window, start, micros))


def _orphan_row(created: float, amount: int, scopes_json: str, draft_json: str | None) -> LedgerRow:
    """The row a dead process's reservation is settled as: its draft, charged the quote."""
    if draft_json is not None:
        values = json.loads(draft_json)
        values[7], values[9] = amount, ORPHANED  # cost_micros, cache
        values[0], values[8] = created, 0  # ts: when the call went out; saved_micros
        return LedgerRow(*values)
    names = dict(s.split(":", 1) for s in json.loads(scopes_json))  # a reservation made
    key, team = names.get("key"), names.get("team")  # before drafts were kept
    return LedgerRow(created, key, team, "", "", "", 0, amount, 0, ORPHANED)


class LedgerBook(KeyTable):
    """Reservations, settled rows, orphans and refunds (see the module docstring)."""

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
        self,
        budgets: Sequence[BudgetSpec],
        amount_micros: int,
        now: float,
        owner: str,
        draft: LedgerRow | None = None,
    ) -> str | Denied:
        """Reserve `amount_micros` on every budget, all or nothing; the reservation id.

        `draft`: the row the call would be settled as, should its process die meanwhile."""
        with self._write() as db:
            decision = check_fit([self._usage(db, b, now) for b in budgets], amount_micros, now)
            if isinstance(decision, Denied):
                return decision
            reservation = secrets.token_hex(16)
            scopes = sorted({":".join(_scope_of(b)) for b in budgets})
            kept = None if draft is None else json.dumps(row_values(draft))
            db.execute(
                "INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
                (reservation, owner, now, amount_micros, json.dumps(scopes), kept),
            )
            return reservation

    def _insert(self, db: sqlite3.Connection, row: LedgerRow, reservation: str | None) -> bool:
        """Insert a row and add its cost to the totals; False if the reservation has one."""
        values = (*row_values(row), row.over_quote_micros, reservation)
        if db.execute(_SPEND_ROW_INSERT, values).rowcount == 0:
            return False
        if row.cost_micros:
            _add_spend(db, row.key_name, row.team, row.ts, row.cost_micros)
        return True

    def settle(self, reservation_id: str, row: LedgerRow) -> None:
        """Drop the reservation and record what the call actually cost, in one commit.

        Idempotent per reservation id, and still records the row if the reservation was
        already released (the money was spent either way). If it was settled as an orphan
        meanwhile (its owner was thought gone), the true row replaces the orphan's."""
        with self._write() as db:
            self.settle_in(db, reservation_id, row)

    def settle_in(self, db: sqlite3.Connection, reservation_id: str, row: LedgerRow) -> None:
        """`settle`'s work inside a write transaction the caller holds and commits (the
        group committer, `proxy.stores.group_commit`, runs several in one)."""
        db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
        if not self._insert(db, row, reservation_id):
            self._correct_orphan(db, row, reservation_id)

    def _correct_orphan(self, db: sqlite3.Connection, row: LedgerRow, reservation: str) -> None:
        found = db.execute(
            "SELECT id, ts, key_name, team, cost_micros FROM ledger WHERE reservation = ? "
            "AND cache = ? AND refunded_micros = 0",
            (reservation, ORPHANED),
        ).fetchone()
        if found is None:
            return
        row_id, ts, key_name, team, cost = found
        db.execute("DELETE FROM ledger WHERE id = ?", (row_id,))
        _add_spend(db, key_name, team, ts, -cost)
        self._insert(db, row, reservation)

    def release(self, reservation_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    def abandon(self, reservation_id: str) -> LedgerRow | None:
        """Settle a reservation whose call was abandoned mid-flight (the gateway stopping) as
        an orphan: the upstream may have billed it. None if it is no longer open."""
        with self._write() as db:
            found = db.execute(
                "SELECT created, amount_micros, scopes_json, draft_json FROM reservations "
                "WHERE id = ?",
                (reservation_id,),
            ).fetchone()
            if found is None:
                return None
            row = _orphan_row(*found)
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            self._insert(db, row, reservation_id)
            return row

    def open_reservations(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])

    # -- orphans ---------------------------------------------------------------------------

    def heartbeat(self, owner: str, now: float) -> None:
        """`owner` is alive at `now` (other hosts judge its reservations by this)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO owners VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET seen = ?",
                (owner, now, now),
            )
            db.execute(
                "DELETE FROM owners WHERE seen < ? AND owner NOT IN "
                "(SELECT owner FROM reservations)",
                (now - _OWNERS_KEPT,),
            )

    def resolve_orphans(
        self, now: float, lease: float, state: Callable[[str], OwnerState] = owner_state
    ) -> list[LedgerRow]:
        """Settle every reservation whose owner is gone as an `ORPHANED` row at its quote.

        Gone: a process of this host that no longer runs, or an owner elsewhere whose last
        heartbeat (or, without one, its reservation) is older than `lease` seconds."""
        with self._write() as db:
            seen = dict(db.execute("SELECT owner, seen FROM owners").fetchall())
            found = db.execute(
                "SELECT id, owner, created, amount_micros, scopes_json, draft_json "
                "FROM reservations ORDER BY created"
            ).fetchall()
            states: dict[str, OwnerState] = {}
            orphans: list[LedgerRow] = []
            for rid, owner, created, amount, scopes_json, draft_json in found:
                if owner not in states:
                    states[owner] = state(owner)
                silent = seen.get(owner, created) < now - lease
                if states[owner] == "alive" or (states[owner] == "unknown" and not silent):
                    continue
                row = _orphan_row(created, amount, scopes_json, draft_json)
                db.execute("DELETE FROM reservations WHERE id = ?", (rid,))
                self._insert(db, row, rid)
                orphans.append(row)
            return orphans

    def refund(self, row_id: int) -> tuple[int, bool] | None:
        """Refund an orphaned row: its cost leaves the spend (and frees its budgets).

        (amount refunded, whether this call did it); None when there is no such row.
        Idempotent: a refunded row answers (amount, False). Only orphaned rows refund."""
        with self._write() as db:
            found = db.execute(
                "SELECT ts, key_name, team, cost_micros, refunded_micros, cache FROM ledger "
                "WHERE id = ?",
                (row_id,),
            ).fetchone()
            if found is None:
                return None
            ts, key_name, team, cost, refunded, cache = found
            if cache != ORPHANED:
                raise InvalidRequest(
                    f"Ledger row {row_id} is not an orphaned row; only those can be refunded.",
                    code="not_refundable",
                )
            if refunded or not cost:
                return refunded, False
            db.execute(
                "UPDATE ledger SET cost_micros = 0, refunded_micros = ? WHERE id = ?",
                (cost, row_id),
            )
            _add_spend(db, key_name, team, ts, -cost)
            return cost, True

    def orphans(self, limit: int = 100) -> list[dict[str, object]]:
        """The newest orphaned rows, refunded or not."""
        sql = (
            "SELECT id, ts, key_name, team, model, provider, images, cost_micros, "
            "refunded_micros, request_id FROM ledger WHERE cache = ? ORDER BY ts DESC LIMIT ?"
        )
        fields = ("id", "ts", "key", "team", "model", "provider", "images", "cost_micros",
                  "refunded_micros", "request_id")  # fmt: skip
        with self._read() as db:
            found = db.execute(sql, (ORPHANED, limit)).fetchall()
        return [dict(zip(fields, r, strict=True)) for r in found]
