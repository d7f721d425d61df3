"""Routing: which models can serve a request, cheapest first.

A request names a concrete model (pinned), a retired model (served by its successor with the
old request's meaning), or a virtual model (`auto` or a use case such as `text`). The router
keeps the models that can serve the request and that policy allows, drops those whose circuit
is open, quotes each, and orders them: cheapest first, then the most strengths for the use
case, then by name. The shell tries them in that order, falling back on retryable failures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from policies.catalog import Catalog, ModelSpec
from policies.circuit import Blocked
from policies.errors import NoRoute
from policies.models import ImageRequest
from policies.pricing import quote
from policies.sizes import dimensions
from policies.translate import translate

__all__ = ["Candidate", "RoutePolicy", "Safety", "Substitute", "plan_route", "with_safety"]

Substitute = Literal["never", "equivalent", "cheaper"]  # may the router serve another model?
Safety = Literal["strict", "moderate", "permissive"]  # the operator's [policy] safety level


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    providers: frozenset[str]  # providers that can take calls (configured with credentials)
    substitute: Substitute = "never"
    commercial_only: bool = False
    cheap_only: bool = False  # budget pressure: only models with the `budget` strength


@dataclass(frozen=True, slots=True)
class Candidate:
    spec: ModelSpec
    request: ImageRequest  # what goes upstream (model, size, quality, prompt mapped)
    quote_micros: int
    target_size: tuple[int, int] | None  # what the client gets; None: whatever came back
    exact_size: bool  # True: the provider must return upstream size exactly


def plan_route(
    request: ImageRequest,
    catalog: Catalog,
    policy: RoutePolicy,
    *,
    images: int,
    blocked: Callable[[str], Blocked | None] = lambda _: None,
) -> tuple[Candidate, ...]:
    """Every model that can serve `request`, in the order to try them. Raises `NoRoute`;
    with `retry_after` when a fit model is only waiting (see `policies.circuit.blocked_by`)."""
    asked = catalog.resolve(request.model)
    _check_available(asked)
    reasons: dict[str, str] = {}
    waiting: list[Blocked] = []
    found: list[Candidate] = []
    for spec in _pool(asked, catalog, policy):
        why = _unfit(spec, request, policy)
        health = None if why else blocked(spec.name)
        if health is not None:
            why = health.reason
            waiting += [health] if health.retry_after is not None else []
        if why:
            reasons[spec.name] = why
            continue
        upstream, target, exact = translate(request, asked, spec)
        found.append(Candidate(spec, upstream, quote(spec, upstream, images), target, exact))
    if not found:
        raise _no_route(asked, reasons, waiting)
    rank = asked.needs or asked.strengths
    found.sort(key=lambda c: (c.quote_micros, -len(set(rank) & set(c.spec.strengths)), c.spec.name))
    if not asked.virtual and not asked.retired and policy.substitute != "cheaper":
        found.sort(key=lambda c: c.spec.name != asked.name)  # the pinned model first
    return tuple(found)


def _check_available(asked: ModelSpec) -> None:
    """A model the catalog lists but no API serves. (A key's allow-list is admission's,
    `policies.admission`, checked before any lookup.)"""
    if not asked.available:
        raise NoRoute(
            f"The model '{asked.name}' is not available: {asked.unavailable_reason}",
            param="model",
            code="model_unavailable",
        )


def _pool(asked: ModelSpec, catalog: Catalog, policy: RoutePolicy) -> list[ModelSpec]:
    if asked.virtual:
        return [
            s
            for s in catalog.models.values()
            if set(asked.needs) <= set(s.strengths) or (not asked.needs and not s.virtual)
        ]
    if asked.retired and asked.successor is not None:
        successor = catalog.models[asked.successor]
        return [successor, *_substitutes(successor, catalog, policy)]
    return [asked, *_substitutes(asked, catalog, policy)]


def _substitutes(spec: ModelSpec, catalog: Catalog, policy: RoutePolicy) -> list[ModelSpec]:
    """`equivalent`: models with every strength of the pinned one; `cheaper`: models with its
    main (first) strength. The pinned model stays in the list as a fallback either way."""
    if policy.substitute == "never":
        return []
    wanted = set(spec.strengths) if policy.substitute == "equivalent" else set(spec.strengths[:1])
    return [
        s for s in catalog.models.values() if s.name != spec.name and wanted <= set(s.strengths)
    ]


def _unfit(spec: ModelSpec, request: ImageRequest, policy: RoutePolicy) -> str:
    checks = (
        (spec.virtual or spec.retired, "not a concrete model"),
        (not spec.available, spec.unavailable_reason or "unavailable"),
        (spec.provider not in policy.providers, f"provider '{spec.provider}' is not configured"),
        (
            policy.commercial_only and spec.licence != "commercial",
            f"licence is {spec.licence} and commercial use is required",
        ),
        (policy.cheap_only and "budget" not in spec.strengths, "budget pressure: cheap tier only"),
        (request.operation != "generate" and not spec.edits, "does not take edits"),
        (request.mask is not None and not spec.masks, "does not take masks"),
        (request.seed is not None and not spec.seed, "does not take a seed"),
        (
            request.background == "transparent" and not spec.transparent,
            "cannot make a transparent background",
        ),
        (not _size_ok(spec, request.size), f"cannot make {request.size}"),
    )
    return next((why for failed, why in checks if failed), "")


def _size_ok(spec: ModelSpec, size: str) -> bool:
    if spec.aspect_ratios:
        return size in spec.aspect_ratios
    limit = spec.rules.max_aspect_ratio
    if limit is None or size == "auto":
        return True
    width, height = dimensions(size)
    # GPT image models make 1024-class sizes; smaller or wider ones are fitted after.
    return max(width, height) / min(width, height) <= limit


def _no_route(asked: ModelSpec, reasons: dict[str, str], waiting: list[Blocked]) -> NoRoute:
    detail = "; ".join(f"{name}: {why}" for name, why in sorted(reasons.items())[:8])
    message = f"No model can serve this request for '{asked.name}' ({detail or 'no candidates'})."
    if not waiting:
        return NoRoute(message, param="model")
    soonest = min(waiting, key=lambda b: b.retry_after or 0.0)
    wait = max(soonest.retry_after or 0.0, 0.001)
    lead = (
        "The provider asked to wait before it takes another call"
        if all(b.upstream for b in waiting)
        else "Every model that can serve this request is waiting out a pause"
    )
    return NoRoute(
        f"{lead}; retry in {wait:.3g} s. {message}",
        param="model",
        code="provider_waiting" if soonest.upstream else "circuit_open",
        retry_after=wait,
    )


# The operator's safety level as each provider's knob takes it (FLUX Pro's `safety_tolerance`
# runs 1-6); OpenAI's `moderation=low` is raised to `auto` under `strict`.
_SAFETY_TOLERANCE = {"strict": 1, "moderate": 2, "permissive": 5}


def with_safety(candidate: Candidate, level: Safety) -> Candidate:
    spec, request = candidate.spec, candidate.request
    if spec.safety_param == "safety_tolerance":
        spec = replace(spec, safety_value=_SAFETY_TOLERANCE.get(level, 2))
    if level == "strict" and request.moderation == "low":
        request = replace(request, moderation="auto")
    return replace(candidate, spec=spec, request=request)
