"""Money per caller: budgets reserved, settled, released or abandoned through the `Ledger`
port, and the hit rows, counted in memory and recorded in batches.

The decisions are the core's (`policies.budget`); a reservation refused comes back as
`policies.budget.Denied` and is raised here as the client's error, with a `Denied` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import assert_never

from policies.budget import BudgetSpec, pressure
from policies.budget import Denied as OverBudget
from policies.ledger_models import LedgerRow
from proxy.authentication import Caller
from proxy.config_cost import CostSettings
from proxy.hit_tally import HitTally
from proxy.observability.events import (
    BackendFailed,
    Charged,
    Denied,
    Events,
    ReservationOrphaned,
    Saved,
)
from proxy.ports import Ledger
from proxy.stores.owners import process_owner

__all__ = ["Accounts", "CallerBudget"]

# Hit rows kept while the ledger cannot take them (shared mode's PostgreSQL down): at one
# row per distinct repeat per flush, hours of an outage at a busy gateway. Past it the
# oldest are dropped, and said so.
UNWRITTEN_AT_MOST = 100_000
FLUSH_BACKOFF_AT_MOST = 8.0  # seconds between retries of a failing ledger, at most


@dataclass
class Accounts:
    ledger: Ledger
    cost: CostSettings
    events: Events
    clock: Callable[[], float]
    owner: str = field(default_factory=process_owner)  # this process, owning its reservations
    hits: HitTally = field(default_factory=HitTally)  # counted until the next flush
    _unwritten: list[LedgerRow] = field(default_factory=list)  # a failed flush's rows

    def budgets(self, caller: Caller) -> tuple[BudgetSpec, ...]:
        specs: list[BudgetSpec] = []
        if self.cost.global_budget is not None:
            specs.append(self.cost.global_budget)
        specs += [b for b in self.cost.team_budgets if caller.team and b.name == caller.team]
        own = caller.key.budget_spec() if caller.key else None
        return (*specs, own) if own else tuple(specs)

    async def under_pressure(self, caller: Caller) -> bool:
        share = self.cost.pressure_share
        budgets = self.budgets(caller)
        if share is None or not budgets:
            return False
        return pressure(await self.ledger.budget_left(budgets, self.clock()), share)

    async def reserve(self, caller: Caller, amount: int, draft: LedgerRow | None = None) -> str:
        """Hold `amount` on every budget of `caller` (raises BudgetExceeded). A call with no
        budget is reserved too: should this process die mid-call, `draft` is settled as an
        orphaned row, since the upstream may have billed it."""
        decision = await self.ledger.reserve(
            self.budgets(caller), amount, self.clock(), self.owner, draft
        )
        match decision:
            case str():
                return decision
            case OverBudget():
                self.events.emit(Denied("budget"))
                raise decision.error
            case _:
                assert_never(decision)

    async def settle(self, reservation: str | None, row: LedgerRow) -> None:
        if reservation is None:
            await self.ledger.record([row])
        else:
            await self.ledger.settle(reservation, row)
        self.events.emit(Charged(row.key_name, row.team, row.model, row.cost_micros))

    async def release(self, reservation: str | None) -> None:
        if reservation is not None:
            await self.ledger.release(reservation)

    async def abandon(self, reservation: str | None) -> None:
        """A call abandoned in flight (the gateway stopping): settled as an orphan."""
        if reservation is not None:
            row = await self.ledger.abandon(reservation)
            if row is not None:
                self.events.emit(ReservationOrphaned(row.model, row.key_name, row.cost_micros))

    def count_hit(
        self, caller: Caller, request_id: str, request_key: str, model: str, provider: str,
        images: int, saved_micros: int, cache: str = "HIT",
    ) -> None:  # fmt: skip
        """One hit (or coalesced answer), counted in memory until the next flush
        (`proxy.hit_tally`: repeats of one request share a row). No `LedgerRow` is built
        per hit: the memo's hit path is a few microseconds."""
        self.hits.add(
            self.clock(), caller.name, caller.team, request_key, model, provider, images,
            saved_micros, cache, request_id or None,
        )  # fmt: skip

    async def flush_hits(self) -> None:
        """Record the counted hit rows in one commit. Rows that fail to write are kept for
        the next flush (a full disk loses no hit)."""
        counted = self.hits.take()
        for row in counted:  # the savings counter moves once per counted row, not per hit
            self.events.emit(Saved(row.key_name, row.team, row.model, row.saved_micros))
        rows, self._unwritten = [*self._unwritten, *counted], []
        if not rows:
            return
        try:
            await self.ledger.record(rows)
        except BaseException:
            self._unwritten[:0] = rows
            dropped = len(self._unwritten) - UNWRITTEN_AT_MOST
            if dropped > 0:
                del self._unwritten[:dropped]
                self.events.emit(BackendFailed(
                    "ledger.flush", f"{dropped} hit rows dropped: the ledger is unreachable"
                ))  # fmt: skip
            raise

    async def run_flusher(
        self,
        interval: float = 0.25,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Background task: record the counted hit rows every `interval` seconds. While
        the ledger fails, each retry waits twice as long as the last, up to
        `FLUSH_BACKOFF_AT_MOST` seconds (one error line each, not four a second), and the
        first success goes back to `interval`."""
        delay = interval
        while True:
            await sleep(delay)
            try:
                await self.flush_hits()
            except Exception as exc:  # a full disk must not kill the flusher; rows are retried
                self.events.emit(BackendFailed("ledger.flush", repr(exc)))
                delay = min(delay * 2, max(interval, FLUSH_BACKOFF_AT_MOST))
            else:
                delay = interval


@dataclass(frozen=True, slots=True)
class CallerBudget:
    """The budgets of one caller, as the generator reserves them attempt by attempt; `draft`
    is the row each reservation would be settled as, were its process to die mid-call."""

    accounts: Accounts
    caller: Caller
    draft: LedgerRow

    async def reserve(self, amount_micros: int, model: str, provider: str) -> str | None:
        draft = replace(self.draft, model=model, provider=provider, cost_micros=amount_micros)
        return await self.accounts.reserve(self.caller, amount_micros, draft)

    async def release(self, reservation: str | None) -> None:
        await self.accounts.release(reservation)

    async def abandon(self, reservation: str | None) -> None:
        await self.accounts.abandon(reservation)
