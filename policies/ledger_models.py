"""Frozen values the ledger stores: one spend row, one API key (never its secret or hash)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from policies.budget import BudgetSpec, Window

__all__ = ["HIT_OUTCOMES", "ORPHANED", "KeyRecord", "LedgerRow"]

# Ledger rows whose `cache` is one of these were answered without an upstream call of
# their own; reports count them as hits and every other row as a miss.
HIT_OUTCOMES: Final = ("HIT", "COALESCED")
# The `cache` of a row settled for a reservation whose process died mid-call: charged at
# its quote (the upstream may have billed it); an admin can refund it.
ORPHANED: Final = "ORPHANED"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One generation (cost = what it was charged), or hits (cost 0, saved = what they
    would have cost). `cache` is the requests' X-Cache outcome.

    `requests` is how many requests the row stands for: 1 for a generation; hits of the same
    request key by the same API key within one flush of the hit rows (a quarter second) share
    one row, with `images` and `saved_micros` summed, `ts` and `request_id` of the first.

    `over_quote_micros` is what an upstream reported beyond the reservation: the budget is
    charged `cost_micros` (at most the reservation); the excess is kept here, apart."""

    ts: float
    key_name: str | None
    team: str | None
    request_key: str
    model: str
    provider: str
    images: int
    cost_micros: int
    saved_micros: int
    cache: str
    request_id: str | None = None
    requests: int = 1
    over_quote_micros: int = 0

    def __post_init__(self) -> None:
        for name in ("images", "cost_micros", "saved_micros", "over_quote_micros"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"LedgerRow.{name} must be an int >= 0, not {value!r}")
        if not isinstance(self.requests, int) or self.requests < 1:
            raise ValueError(f"LedgerRow.requests must be an int >= 1, not {self.requests!r}")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as the gateway knows it. `None` limits mean "no limit of its own"."""

    name: str
    team: str | None
    created: float
    revoked: float | None = None
    budget_micros: int | None = None
    budget_window: Window | None = None
    requests_per_minute: int | None = None
    images_per_minute: int | None = None
    models: tuple[str, ...] | None = None  # an allow-list; None allows every model
    source: str = "admin"  # "admin" (issued at run time) or "config"

    @property
    def active(self) -> bool:
        return self.revoked is None

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def budget_spec(self) -> BudgetSpec | None:
        """The key's own budget, if it has one (a window defaults to "day")."""
        if self.budget_micros is None:
            return None
        return BudgetSpec("key", self.name, self.budget_micros, self.budget_window or "day")
