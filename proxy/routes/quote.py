"""Dry runs: `X-Imagegate-Dry-Run: 1` on an image route answers what the request would do.

The request is authenticated, checked against the key's models and the prompt policy, and
validated exactly as the real one; then, instead of generating, the gateway answers 200 with
a quote (`object: "imagegate.quote"`): the cache outcome it would have, the route (models in
the order they would be tried, each with its worst-case quote), the amount it would reserve,
and each budget that applies with what is left and whether the quote fits. No provider is
called, nothing is reserved, no ledger row is written and no rate-limit token is taken.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from policies.budget import BudgetUsage, format_usd
from policies.cache import (
    CacheDirectives,
    LookupPlan,
    outcome_of,
    parse_cache_control,
    plan_lookup,
)
from policies.errors import InvalidRequest
from policies.models import Entry, ParsedRequest
from policies.normalize import request_key
from policies.pricing import quote
from policies.routing import Candidate
from proxy.accounts import Accounts
from proxy.app_keys import ACCOUNTS, LOG_FIELDS, SERVICE, STORES
from proxy.authentication import Caller
from proxy.service import ImageService

__all__ = ["DRY_RUN", "dry_run", "wants_dry_run"]

DRY_RUN = "X-Imagegate-Dry-Run"
_YES = frozenset({"1", "true", "yes", "on"})
_NO = frozenset({"0", "false", "no", "off", ""})


def wants_dry_run(headers: Any) -> bool:
    """Whether the request asks for a dry run (a header value other than yes/no is a 400)."""
    value = headers.get(DRY_RUN)
    if value is None:
        return False
    flag = value.strip().lower()
    if flag not in _YES and flag not in _NO:
        raise InvalidRequest(
            f"'{DRY_RUN}' must be 1 (a quote, nothing spent) or 0; got {value[:20]!r}.",
            param=DRY_RUN,
        )
    return flag in _YES


async def dry_run(request: web.Request, caller: Caller, parsed: ParsedRequest) -> web.Response:
    """The quote for a request that passed authentication, the allow-list and validation."""
    service = request.app[SERVICE]
    accounts = request.app[ACCOUNTS]
    directives = parse_cache_control(request.headers.get("Cache-Control"))
    n = parsed.delivery.n
    key = request_key(parsed.request, caller.scope)
    lookup = await _lookup(service, key, n, directives)
    route = await _route(service, accounts, caller, parsed, len(lookup.missing))
    amount = route[0].quote_micros if route else 0
    budgets = accounts.budgets(caller)
    ledger = request.app[STORES].ledger
    usages = await ledger.budget_left(budgets, accounts.clock()) if budgets else []
    first_cached = next(iter(lookup.cached.values()), None)
    model, provider = _served(service, route, first_cached)
    body = {
        "object": "imagegate.quote",
        "dry_run": True,
        "request_key": key,
        "model": parsed.request.model,
        "images": n,
        "cache": outcome_of(lookup, directives, generated=len(lookup.missing), coalesced=0).value,
        "cached_images": len(lookup.cached),
        "route": [_step(service, c, len(lookup.missing)) for c in route],
        "quote_usd": format_usd(amount),
        "budgets": [_budget(u, amount) for u in usages],
        "fits": all(u.fits(amount) for u in usages),
    }
    request[LOG_FIELDS] = {"key": key[:12], "model": model, "dry_run": True}
    headers = {
        DRY_RUN: "1",
        "X-Cache-Key": key,
        "X-Imagegate-Model": model,
        "X-Imagegate-Provider": provider,
        "X-Imagegate-Cost-USD": "0",
        "X-Imagegate-Quote-USD": format_usd(amount),
    }
    return web.json_response(body, headers=headers)


async def _lookup(
    service: ImageService, key: str, n: int, directives: CacheDirectives
) -> LookupPlan:
    """Read-only: which indexes the cache would serve (raises NotCached as the real
    request would under only-if-cached)."""
    entries = service.stores.entries
    found = [None] * n if directives.no_cache else [await entries.get(key, i) for i in range(n)]
    return plan_lookup(found, directives, now=service.clock(), ttl=service.ttl_seconds)


async def _route(
    service: ImageService, accounts: Accounts, caller: Caller, parsed: ParsedRequest, missing: int
) -> tuple[Candidate, ...]:
    """The models the missing images would be tried on, in order (raises NoRoute as the
    real request would); none when the cache serves every image."""
    if not missing:
        return ()
    asked = service.catalog.resolve(parsed.request.model)
    cheap = asked.virtual and await accounts.under_pressure(caller)
    candidates = service.router.plan(parsed.request, images=missing, cheap_only=cheap)
    return candidates[: service.generator.max_attempts]


def _served(
    service: ImageService, route: tuple[Candidate, ...], cached: Entry | None
) -> tuple[str, str]:
    if route:
        spec = route[0].spec
        return spec.name, service.router.registry.get(spec.provider).name
    assert cached is not None  # no route only when every image is cached
    return cached.model, cached.provider


def _step(service: ImageService, candidate: Candidate, images: int) -> dict[str, object]:
    spec = candidate.spec
    return {
        "model": spec.name,
        "provider": service.router.registry.get(spec.provider).name,
        "quote_usd": format_usd(candidate.quote_micros),
        "catalog_quote_usd": format_usd(quote(spec, candidate.request, images)),
    }


def _budget(usage: BudgetUsage, amount: int) -> dict[str, object]:
    spec = usage.spec
    return {
        "scope": spec.scope,
        "name": spec.name,
        "window": spec.window,
        "limit_usd": format_usd(spec.limit_micros),
        "left_usd": format_usd(usage.left_micros),
        "quote_usd": format_usd(amount),
        "fits": usage.fits(amount),
    }
