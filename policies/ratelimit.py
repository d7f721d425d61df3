"""Token buckets: `take(bucket, rate, now, cost) -> (bucket, Allowed | Limited | Oversized)`.

A bucket holds up to `burst` tokens and refills continuously at `per_minute / 60` tokens per
second. A take of `cost` tokens is allowed when the bucket holds them; otherwise it is
`Limited` with the seconds until it would be (`retry_after`). A cost above the burst can
never be allowed, so it is `Oversized`, a 400 that says so, never a wait.

The fields of `Allowed` / `Limited` are what the shell sends as OpenAI does:
`Retry-After`, `x-ratelimit-limit-requests` (`limit`, per minute),
`x-ratelimit-remaining-requests` (`remaining`) and `x-ratelimit-reset-requests`
(`reset_seconds`, until the bucket is full again).

The clock may go backwards (NTP, another process's clock): that never mints tokens; the
bucket keeps its latest `updated` and refills only once time passes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from policies.errors import InvalidRequest, RateLimited

__all__ = [
    "Allowed",
    "Bucket",
    "Limited",
    "Oversized",
    "Rate",
    "peek",
    "take",
    "take_all",
]

# Float refills can land a hair below a whole token (0.1 + 0.2 != 0.3); a shortfall this
# small counts as none, so a client that waited exactly `retry_after` is let in.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_minute` tokens a minute, at most `burst` (default: `per_minute`) at once."""

    per_minute: int
    burst: int | None = None
    unit: str = "requests"  # for messages only: "requests", "images"

    def __post_init__(self) -> None:
        if self.per_minute < 1:
            raise ValueError(f"a rate limit needs per_minute >= 1, not {self.per_minute}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"a rate limit needs burst >= 1, not {self.burst}")

    @property
    def capacity(self) -> int:
        return self.per_minute if self.burst is None else self.burst

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Allowed:
    remaining: int
    limit: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class Limited:
    retry_after: float
    limit: int
    remaining: int
    reset_seconds: float

    def error(self, unit: str = "requests") -> RateLimited:
        return RateLimited(
            f"Rate limit reached: {self.limit} {unit} per minute; try again in "
            f"{self.retry_after:.2f}s.",
            retry_after=self.retry_after,
            unit=unit,
            limit=self.limit,
            remaining=self.remaining,
            reset_seconds=self.reset_seconds,
        )


@dataclass(frozen=True, slots=True)
class Oversized:
    """The cost exceeds the burst: no amount of waiting admits it."""

    cost: int
    limit: int
    burst: int
    error: InvalidRequest


def _refill(bucket: Bucket | None, rate: Rate, now: float) -> Bucket:
    cap = float(rate.capacity)
    if bucket is None:
        return Bucket(cap, now)
    elapsed = max(0.0, now - bucket.updated)
    tokens = min(cap, max(0.0, bucket.tokens) + elapsed * rate.per_second)
    return Bucket(tokens, max(bucket.updated, now))


def _oversized(rate: Rate, cost: int) -> Oversized:
    burst = rate.capacity
    message = (
        f"This request needs {cost} {rate.unit} of a rate limit that allows at most {burst} "
        f"at once ({rate.per_minute} {rate.unit} per minute), so it can never be admitted; "
        f"ask for at most {burst}."
    )
    error = InvalidRequest(message, code="rate_limit_exceeded")
    return Oversized(cost=cost, limit=rate.per_minute, burst=burst, error=error)


def _decide(bucket: Bucket, rate: Rate, cost: int) -> Allowed | Limited | Oversized:
    """What taking `cost` from an already refilled `bucket` would give (nothing taken)."""
    if cost < 0:
        raise ValueError(f"a rate-limit cost must be >= 0, not {cost}")
    if cost > rate.capacity:
        return _oversized(rate, cost)
    cap, speed = float(rate.capacity), rate.per_second
    if bucket.tokens + _EPSILON >= cost:
        left = max(0.0, bucket.tokens - cost)
        return Allowed(math.floor(left), rate.per_minute, (cap - left) / speed)
    return Limited(
        # Rounded up to the next millisecond: float timestamps near 2e9 are only good to
        # ~0.25 us, so a client that waits exactly this long must find the tokens there.
        retry_after=math.ceil((cost - bucket.tokens) / speed * 1000) / 1000,
        limit=rate.per_minute,
        remaining=math.floor(bucket.tokens),
        reset_seconds=(cap - bucket.tokens) / speed,
    )


def _after(bucket: Bucket, cost: int) -> Bucket:
    return Bucket(max(0.0, bucket.tokens - cost), bucket.updated)


def peek(
    bucket: Bucket | None, rate: Rate, now: float, cost: int = 1
) -> Allowed | Limited | Oversized:
    """What `take` would decide, taking nothing (for headers, or to plan a bounded wait)."""
    return _decide(_refill(bucket, rate, now), rate, cost)


def take(
    bucket: Bucket | None, rate: Rate, now: float, cost: int = 1
) -> tuple[Bucket, Allowed | Limited | Oversized]:
    """Refill to `now`, then take `cost` tokens if they are there. `None` is a full bucket.

    The returned bucket is the one to store, whatever the decision (only `Allowed` took
    anything; the others just refilled it)."""
    refilled = _refill(bucket, rate, now)
    decision = _decide(refilled, rate, cost)
    if isinstance(decision, Allowed):
        return _after(refilled, cost), decision
    return refilled, decision


def take_all(
    items: Sequence[tuple[Bucket | None, Rate, int]], now: float
) -> tuple[tuple[Bucket, ...], Allowed | Limited | Oversized]:
    """Take from several buckets at once (a key's requests and its images), all or nothing.

    Returns the buckets to store and the decision: the first `Oversized`, else the `Limited`
    with the longest wait, else the `Allowed` with the fewest remaining. `items` must not
    be empty."""
    if not items:
        raise ValueError("take_all needs at least one bucket")
    refilled = [_refill(bucket, rate, now) for bucket, rate, _ in items]
    decisions = [_decide(b, rate, cost) for b, (_, rate, cost) in zip(refilled, items, strict=True)]
    oversized = [d for d in decisions if isinstance(d, Oversized)]
    if oversized:
        return tuple(refilled), oversized[0]
    limited = [d for d in decisions if isinstance(d, Limited)]
    if limited:
        return tuple(refilled), max(limited, key=lambda d: d.retry_after)
    taken = tuple(_after(b, cost) for b, (_, _, cost) in zip(refilled, items, strict=True))
    allowed = [d for d in decisions if isinstance(d, Allowed)]
    return taken, min(allowed, key=lambda d: d.remaining)
