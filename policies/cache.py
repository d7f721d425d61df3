"""Cache decisions: request Cache-Control directives and what a lookup found.

no-cache        skip the lookup, generate, store           -> X-Cache: BYPASS
no-store        look up as usual, but store nothing new
only-if-cached  never spend: a miss is a 504
max-age=N       only entries younger than N seconds count
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from policies.errors import InvalidRequest, NotCached
from policies.models import Entry

__all__ = [
    "CacheDirectives",
    "CacheOutcome",
    "LookupPlan",
    "fresh_until",
    "outcome_of",
    "parse_cache_control",
    "plan_lookup",
]


class CacheOutcome(StrEnum):
    HIT = "HIT"
    MISS = "MISS"
    PARTIAL = "PARTIAL"
    COALESCED = "COALESCED"
    BYPASS = "BYPASS"


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    no_cache: bool = False
    no_store: bool = False
    only_if_cached: bool = False
    max_age: int | None = None


def parse_cache_control(header: str | None) -> CacheDirectives:
    """Parse a request Cache-Control header; unknown directives are ignored (RFC 9111)."""
    if not header:
        return CacheDirectives()
    flags: set[str] = set()
    max_age: int | None = None
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        name = name.strip().lower()
        if name == "max-age":
            text = value.strip().strip('"')
            if not text.isascii() or not text.isdigit() or len(text) > 12:
                raise InvalidRequest(
                    f"Invalid Cache-Control max-age '{value.strip()[:20]}': use a "
                    "non-negative whole number of seconds, e.g. 'max-age=3600'.",
                    param=None,
                    code="invalid_cache_control",
                )
            max_age = int(text) if max_age is None else min(max_age, int(text))
        elif name:
            flags.add(name)
    return CacheDirectives(
        no_cache="no-cache" in flags,
        no_store="no-store" in flags,
        only_if_cached="only-if-cached" in flags,
        max_age=max_age,
    )


@dataclass(frozen=True, slots=True)
class LookupPlan:
    """`stale`: the entries found at missing indexes but too old to serve. A flight that
    finds another entry there once it holds the key's lock knows a peer made it meanwhile."""

    cached: dict[int, Entry]
    missing: tuple[int, ...]
    stale: dict[int, Entry] = field(default_factory=dict)


def plan_lookup(
    found: Sequence[Entry | None],
    directives: CacheDirectives,
    *,
    now: float,
    ttl: float | None = None,
) -> LookupPlan:
    """Decide which indexes are served from the cache and which must be generated.

    `found[i]` is the stored entry for index i (or None). An entry older than `ttl` or than
    the client's max-age does not count. Raises `NotCached` when the client asked never to
    spend and something is missing.
    """
    limits = [age for age in (ttl, directives.max_age) if age is not None]
    max_age = min(limits) if limits else None
    cached: dict[int, Entry] = {}
    missing: list[int] = []
    stale: dict[int, Entry] = {}
    for index, entry in enumerate(found):
        usable = entry is not None and not directives.no_cache
        if usable and max_age is not None:
            assert entry is not None
            usable = now - entry.created <= max_age
        if usable:
            assert entry is not None
            cached[index] = entry
        else:
            missing.append(index)
            if entry is not None:
                stale[index] = entry
    if missing and directives.only_if_cached:
        raise NotCached(
            f"{len(missing)} of {len(found)} image(s) are not in the cache and the request "
            "said 'Cache-Control: only-if-cached'; send it without that directive to generate.",
        )
    return LookupPlan(cached=cached, missing=tuple(missing), stale=stale)


def outcome_of(
    plan: LookupPlan, directives: CacheDirectives, *, generated: int, coalesced: int
) -> CacheOutcome:
    """The X-Cache value once the missing indexes were generated or joined."""
    if directives.no_cache:
        return CacheOutcome.BYPASS
    if not plan.missing:
        return CacheOutcome.HIT
    if plan.cached:
        return CacheOutcome.PARTIAL
    if generated == 0 and coalesced > 0:
        return CacheOutcome.COALESCED
    return CacheOutcome.MISS


def fresh_until(entries: Sequence[Entry], ttl: float | None) -> float:
    """Until when a response made of these entries may be served again without a lookup.

    The oldest entry expires first; with no TTL, a content-addressed entry never goes stale.
    A client's max-age is per request, so responses to such requests are never reused."""
    if ttl is None or not entries:
        return math.inf
    return min(entry.created for entry in entries) + ttl
