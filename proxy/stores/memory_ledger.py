"""`Ledger` in memory, for unit tests of the service: the same contract as SQLite's."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from policies.budget import BudgetSpec, BudgetUsage, Denied, check_fit, window_bounds
from policies.ledger_models import ORPHANED, LedgerRow
from proxy.stores.owners import OwnerState, owner_state

__all__ = ["MemoryLedger"]


@dataclass(frozen=True, slots=True)
class _Held:
    owner: str
    created: float
    amount: int
    scopes: frozenset[str]
    draft: LedgerRow | None
    key_name: str | None
    team: str | None


def _scope(spec: BudgetSpec) -> str:
    return "global:" if spec.scope == "global" else f"{spec.scope}:{spec.name}"


def _row_scopes(row: LedgerRow) -> set[str]:
    scopes = {"global:"}
    if row.team is not None:
        scopes.add(f"team:{row.team}")
    if row.key_name is not None:
        scopes.add(f"key:{row.key_name}")
    return scopes


class MemoryLedger:
    """Rows in a list, open reservations in a dict; every method runs without awaiting, so
    each is atomic on the event loop as one transaction is in SQLite."""

    def __init__(self, state: Callable[[str], OwnerState] = owner_state) -> None:
        self._state = state
        self._rows: list[LedgerRow] = []
        self._settled: dict[str, int] = {}  # reservation id -> index of its row
        self._open: dict[str, _Held] = {}
        self._seen: dict[str, float] = {}

    def _usage(self, spec: BudgetSpec, now: float) -> BudgetUsage:
        start, end = window_bounds(spec.window, now)
        scope = _scope(spec)
        spent = sum(
            r.cost_micros
            for r in self._rows
            if start <= r.ts and (end is None or r.ts < end) and scope in _row_scopes(r)
        )
        reserved = sum(h.amount for h in self._open.values() if scope in h.scopes)
        return BudgetUsage(spec, spent, reserved)

    async def reserve(
        self,
        budgets: Sequence[BudgetSpec],
        amount_micros: int,
        now: float,
        owner: str,
        draft: LedgerRow | None = None,
    ) -> str | Denied:
        decision = check_fit([self._usage(b, now) for b in budgets], amount_micros, now)
        if isinstance(decision, Denied):
            return decision
        rid = secrets.token_hex(16)
        names = dict(_scope(b).split(":", 1) for b in budgets)
        scopes = frozenset(_scope(b) for b in budgets)
        key, team = names.get("key"), names.get("team")
        self._open[rid] = _Held(owner, now, amount_micros, scopes, draft, key, team)
        return rid

    async def settle(self, reservation_id: str, row: LedgerRow) -> None:
        self._open.pop(reservation_id, None)
        index = self._settled.get(reservation_id)
        if index is None:
            self._settled[reservation_id] = len(self._rows)
            self._rows.append(row)
        elif self._rows[index].cache == ORPHANED:  # the true row replaces the orphan's
            self._rows[index] = row

    async def release(self, reservation_id: str) -> None:
        self._open.pop(reservation_id, None)

    async def abandon(self, reservation_id: str) -> LedgerRow | None:
        held = self._open.get(reservation_id)
        return None if held is None else self._orphan(reservation_id, held)

    async def resolve_orphans(self, owner: str, now: float, lease: float) -> list[LedgerRow]:
        self._seen[owner] = now
        orphans: list[LedgerRow] = []
        for rid, held in sorted(self._open.items(), key=lambda item: item[1].created):
            state = self._state(held.owner)
            silent = self._seen.get(held.owner, held.created) < now - lease
            if state == "alive" or (state == "unknown" and not silent):
                continue
            orphans.append(self._orphan(rid, held))
        return orphans

    def _orphan(self, rid: str, held: _Held) -> LedgerRow:
        row = _orphan_row(held)
        del self._open[rid]
        self._settled[rid] = len(self._rows)
        self._rows.append(row)
        return row

    async def record(self, rows: Sequence[LedgerRow]) -> None:
        self._rows.extend(rows)

    async def budget_left(self, budgets: Sequence[BudgetSpec], now: float) -> list[BudgetUsage]:
        return [self._usage(spec, now) for spec in budgets]


def _orphan_row(held: _Held) -> LedgerRow:
    if held.draft is not None:
        return replace(
            held.draft, ts=held.created, cost_micros=held.amount, saved_micros=0, cache=ORPHANED
        )
    return LedgerRow(held.created, held.key_name, held.team, "", "", "", 0, held.amount, 0,
                     ORPHANED)  # fmt: skip
