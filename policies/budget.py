"""Budgets with reservations: does a worst-case quote fit every budget that applies?

A budget caps what one scope (the whole gateway, a team, or a key) spends in a UTC calendar
window (a day, a month, or all time). The store reads, for the current window of each
budget, what was settled (`spent_micros`) and what open reservations hold
(`reserved_micros`); `check_fit` decides all-or-nothing whether a new reservation fits.

    reserve  ->  usage.reserve(quote)            (only after `check_fit` said `Fits`)
    settle   ->  usage.settle(quote, charged)    (charged = cap_charge(quote, actual).charged)
    release  ->  usage.release(quote)            (the call failed; give it all back)

A budget is never charged more than was reserved: `cap_charge` splits what an upstream
reported into the part charged (at most the reservation) and the over-quote excess, which
the ledger records apart and which stops the model until an operator looks.

Money is integer micro-USD everywhere. Time comes in as `now` (seconds since the epoch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final, Literal, get_args

from policies.errors import BudgetExceeded

__all__ = [
    "MICROS_PER_USD",
    "BudgetSpec",
    "BudgetUsage",
    "Charge",
    "Denied",
    "Fits",
    "Scope",
    "Window",
    "cap_charge",
    "check_fit",
    "format_reset",
    "format_usd",
    "parse_usd",
    "pressure",
    "split_micros",
    "window_bounds",
]

Window = Literal["day", "month", "total"]
Scope = Literal["global", "team", "key"]

MICROS_PER_USD: Final = 1_000_000
_MAX_USD_DIGITS: Final = 15  # parse_usd: at most 10**15 dollars (no billion-digit ints)
_WINDOWS: Final[tuple[str, ...]] = get_args(Window)
_SCOPES: Final[tuple[str, ...]] = get_args(Scope)
_PHRASES: Final[dict[str, str]] = {"day": "this day", "month": "this month", "total": "in total"}


def format_usd(micros: int) -> str:
    """Exact dollars from micro-USD, no trailing zeros: 40_000 -> "0.04", 25_000_000 -> "25"."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def parse_usd(text: str) -> int:
    """Exact micro-USD from decimal dollars, as `format_usd` writes them: "0.04" -> 40_000.

    Raises ValueError for anything that is not 0 or more dollars in at most 6 decimals
    (text, NaN, infinity, "-1", "0.0000005") or is more than 10**15 dollars."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not an amount of dollars: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"must be 0 or more dollars, got {text!r}")
    if value.adjusted() > _MAX_USD_DIGITS:
        raise ValueError(f"more dollars than anyone spends: {text!r}")
    micros = value * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError(f"finer than a micro-dollar (6 decimals): {text!r}")
    return int(micros)


def split_micros(total: int, count: int) -> tuple[int, ...]:
    """`total` micro-USD shared by `count` images, the first ones a micro more, summing exactly:
    (40_000, 3) -> (13_334, 13_333, 13_333). `count` below 1 counts as 1."""
    share, rest = divmod(total, max(count, 1))
    return tuple(share + (1 if i < rest else 0) for i in range(max(count, 1)))


def format_reset(end: float | None) -> str:
    """A window's end as ISO 8601 UTC ("2026-11-29T00:00:00Z"), or "never" for `total`."""
    if end is None:
        return "never"
    return datetime.fromtimestamp(end, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_bounds(window: Window, now: float) -> tuple[float, float | None]:
    """Start and end (the reset time) of the UTC calendar window that contains `now`.

    `day` runs from midnight UTC to the next midnight, `month` from the 1st 00:00 UTC to the
    next 1st, `total` from 0 and never ends. start <= now < end.
    """
    if window == "total":
        return 0.0, None
    # Boundaries fall on whole seconds, so the whole second of `now` is in the same window;
    # this also avoids datetime rounding 23:59:59.9999999 up into the next day.
    moment = datetime.fromtimestamp(int(now // 1), tz=UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return start.timestamp(), start.timestamp() + 86_400.0
    if window == "month":
        first = start.replace(day=1)
        year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
        return first.timestamp(), first.replace(year=year, month=month).timestamp()
    raise ValueError(f"unknown budget window {window!r}; use one of {', '.join(_WINDOWS)}")


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """What one scope may spend per window. `name` is the team or key name (any for global)."""

    scope: Scope
    name: str
    limit_micros: int
    window: Window

    def __post_init__(self) -> None:
        if self.scope not in _SCOPES:
            raise ValueError(f"unknown budget scope {self.scope!r}; use one of {_SCOPES}")
        if self.window not in _WINDOWS:
            raise ValueError(f"unknown budget window {self.window!r}; use one of {_WINDOWS}")
        if self.limit_micros < 0:
            raise ValueError(f"budget limit must be >= 0 micro-USD, not {self.limit_micros}")

    @property
    def label(self) -> str:
        """How messages name it: "key 'web-app'", "team 'growth'", "the global budget"."""
        if self.scope == "global":
            return "the global budget"
        return f"{self.scope} {self.name!r}"


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """One budget as the store read it for the window that contains `now`."""

    spec: BudgetSpec
    spent_micros: int
    reserved_micros: int = 0

    @property
    def used_micros(self) -> int:
        return self.spent_micros + self.reserved_micros

    @property
    def left_micros(self) -> int:
        return max(0, self.spec.limit_micros - self.used_micros)

    def fits(self, amount_micros: int) -> bool:
        return self.used_micros + amount_micros <= self.spec.limit_micros

    def reserve(self, amount_micros: int) -> BudgetUsage:
        return replace(self, reserved_micros=self.reserved_micros + amount_micros)

    def settle(self, reserved_micros: int, actual_micros: int) -> BudgetUsage:
        """Turn a reservation into spend: the reservation goes, the actual cost stays."""
        return replace(
            self,
            spent_micros=self.spent_micros + actual_micros,
            reserved_micros=self.reserved_micros - reserved_micros,
        )

    def release(self, reserved_micros: int) -> BudgetUsage:
        return replace(self, reserved_micros=self.reserved_micros - reserved_micros)


@dataclass(frozen=True, slots=True)
class Fits:
    """Every budget has room: these are the usages with the amount reserved on each."""

    usages: tuple[BudgetUsage, ...]
    amount_micros: int


@dataclass(frozen=True, slots=True)
class Denied:
    """The first budget without room, and the 429 `insufficient_quota` error to send."""

    usage: BudgetUsage
    amount_micros: int
    error: BudgetExceeded


def check_fit(usages: Sequence[BudgetUsage], amount_micros: int, now: float) -> Fits | Denied:
    """All-or-nothing: does `amount_micros` fit in every budget of `usages`?"""
    if amount_micros < 0:
        raise ValueError(f"a reservation must be >= 0 micro-USD, not {amount_micros}")
    for usage in usages:
        if not usage.fits(amount_micros):
            return Denied(usage, amount_micros, _exceeded(usage, amount_micros, now))
    return Fits(tuple(u.reserve(amount_micros) for u in usages), amount_micros)


def _exceeded(usage: BudgetUsage, amount_micros: int, now: float) -> BudgetExceeded:
    spec = usage.spec
    _, end = window_bounds(spec.window, now)
    resets = "never resets" if end is None else f"resets {format_reset(end)}"
    return BudgetExceeded(
        f"Budget exceeded: {spec.label} has ${format_usd(usage.left_micros)} of "
        f"${format_usd(spec.limit_micros)} left {_PHRASES[spec.window]} ({resets}); "
        f"this request may cost up to ${format_usd(amount_micros)}."
    )


@dataclass(frozen=True, slots=True)
class Charge:
    """What a settled call costs a budget (`charged`, at most its reservation) and what the
    upstream reported beyond the reservation (`over_quote`)."""

    charged_micros: int
    over_quote_micros: int

    @property
    def reported_micros(self) -> int:
        return self.charged_micros + self.over_quote_micros


def cap_charge(reserved_micros: int, actual_micros: int) -> Charge:
    """Split an actual cost at the reservation: budgets are charged at most what they held."""
    if reserved_micros < 0 or actual_micros < 0:
        raise ValueError("a reservation and a cost are >= 0 micro-USD")
    charged = min(reserved_micros, actual_micros)
    return Charge(charged, actual_micros - charged)


def pressure(usages: Sequence[BudgetUsage], threshold: float) -> bool:
    """True when any budget is at least `threshold` (a share, 0..1) used, reservations
    included: the rule that sends `auto` and the virtual models to the cheap tier."""
    return any(u.used_micros >= threshold * u.spec.limit_micros for u in usages)
