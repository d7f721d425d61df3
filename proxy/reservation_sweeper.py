"""The ledger's upkeep in every process: heartbeats, orphaned reservations, circuit holds.

Every `interval` seconds (and once at start) each process:
- writes its heartbeat, which other hosts judge its reservations by;
- settles the reservations of processes that died (a worker, a replica, or this gateway
  before a restart) as `ORPHANED` rows at their quotes (`LedgerBook.resolve_orphans`): a
  dead process on this host at once, one elsewhere once its heartbeat is `lease` seconds old;
- loads the circuit holds (models stopped until an operator resets them) into its router.

With the defaults a dead process's reservations are resolved within 10 s on this host and
within 50 s elsewhere (DESIGN.md §6 asks for 60 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from policies.ledger_models import LedgerRow
from proxy.observability.events import BackendFailed, Events, ReservationOrphaned
from proxy.ports import CircuitHolds, Ledger
from proxy.router import Router

__all__ = ["ReservationSweeper"]


@dataclass
class ReservationSweeper:
    ledger: Ledger
    holds: CircuitHolds
    router: Router
    clock: Callable[[], float]
    owner: str  # this process, as the owner of its reservations
    events: Events
    interval: float = 10.0
    lease: float = 40.0

    async def sweep(self) -> list[LedgerRow]:
        """One round; the rows the orphaned reservations were settled as."""
        version = self.router.hold_version
        orphans = await self.ledger.resolve_orphans(self.owner, self.clock(), self.lease)
        self.router.sync_holds(await self.holds.holds(), version)
        for row in orphans:
            self.events.emit(
                ReservationOrphaned(
                    row.model, row.key_name, row.cost_micros, row.provider, row.request_id
                )
            )
        return orphans

    async def run(self) -> None:
        """Background task: `sweep` every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception as exc:  # a locked or full disk must not stop the upkeep
                self.events.emit(BackendFailed("ledger.sweep", str(exc), exc))
