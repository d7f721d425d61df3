"""The router's state: circuits, upstream back-off and holds per model, around `policies.routing`.

A hold opens a model's circuit until an operator resets it (`POST /admin/circuits/{model}/
reset`): it is set when an upstream bills beyond the quote. Holds are kept in the ledger, so
every worker process (and a restart) honours them; `sync_holds` loads them.

Each change of a model's circuit is emitted as `CircuitChanged` (a hold or a reset always,
a recorded call when the state it leaves differs from the last one emitted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from policies.catalog import Catalog
from policies.circuit import Blocked, Breaker, Circuit, blocked_by, record, state_at
from policies.errors import NoRoute
from policies.models import ImageRequest
from policies.routing import Candidate, RoutePolicy, Safety, Substitute, plan_route, with_safety
from policies.sizes import parse_size
from proxy.observability.events import CircuitChanged, Events
from proxy.providers.registry import ProviderRegistry

__all__ = ["Router"]

_STATE_VALUE = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


@dataclass
class Router:
    catalog: Catalog
    registry: ProviderRegistry
    events: Events
    clock: Callable[[], float]
    breaker: Breaker = field(default_factory=Breaker)
    substitute: Substitute = "never"
    commercial_only: bool = False
    safety: Safety = "moderate"  # the operator's [policy] safety
    _circuits: dict[str, Circuit] = field(default_factory=dict)
    _backoff_until: dict[str, float] = field(default_factory=dict)
    _held: dict[str, str] = field(default_factory=dict)  # model -> why it is held open
    _held_at: dict[str, int] = field(default_factory=dict)  # model -> hold_version when held
    hold_version: int = 0  # counts holds set here, so a sync never undoes a newer one
    _emitted: dict[str, float] = field(default_factory=dict)  # model -> last state emitted

    def plan(
        self,
        request: ImageRequest,
        *,
        images: int,
        cheap_only: bool = False,
    ) -> tuple[Candidate, ...]:
        if self.registry.placeholder_only:
            return self._placeholder_plan(request, images, cheap_only)
        policy = RoutePolicy(
            providers=self.registry.ready(),
            substitute=self.substitute,
            commercial_only=self.commercial_only,
            cheap_only=cheap_only,
        )
        found = plan_route(request, self.catalog, policy, images=images, blocked=self.blocked)
        return tuple(with_safety(c, self.safety) for c in found)

    def _placeholder_plan(
        self,
        request: ImageRequest,
        images: int,
        cheap_only: bool,
    ) -> tuple[Candidate, ...]:
        """Offline: the model the router would choose were every catalog provider configured,
        drawn by the placeholder for $0. A name no route serves is drawn as asked (the
        placeholder answers for every catalog model name)."""
        policy = RoutePolicy(
            providers=frozenset(spec.provider for spec in self.catalog.models.values()),
            substitute=self.substitute,
            commercial_only=self.commercial_only,
            cheap_only=cheap_only,
        )
        target = parse_size(request.size)
        try:
            chosen = with_safety(
                plan_route(request, self.catalog, policy, images=images)[0], self.safety
            )
        except NoRoute:
            spec = self.catalog.resolve(request.model)
            return (Candidate(spec, request, 0, target, exact_size=True),)
        # Drawn at the size the client gets (a 256x256 dall-e-2 request is not drawn at 1024).
        drawn = replace(chosen.request, size=request.size)
        return (
            replace(chosen, request=drawn, quote_micros=0, target_size=target, exact_size=True),
        )

    def blocked(self, model: str) -> Blocked | None:
        """Why `model` takes no call now (None: it may)."""
        return blocked_by(
            self._circuits.get(model, Circuit()),
            self.breaker,
            self.clock(),
            backoff_until=self._backoff_until.get(model, 0.0),
            held=self._held.get(model),
        )

    def hold(self, model: str, reason: str) -> None:
        """Open `model`'s circuit until `reset` (an operator's decision)."""
        self.hold_version += 1
        self._held[model] = reason
        self._held_at[model] = self.hold_version
        self._emit(model, 1.0)

    def reset(self, model: str) -> None:
        """Close `model`'s circuit: forget its hold, failures and back-off."""
        self._held.pop(model, None)
        self._held_at.pop(model, None)
        self._circuits.pop(model, None)
        self._backoff_until.pop(model, None)
        self._emit(model, 0.0)

    def sync_holds(self, holds: dict[str, str], read_after: int) -> None:
        """Take the holds kept in the ledger (set or reset by other processes), as read once
        `hold_version` was `read_after`: a hold set here since then is kept."""
        for model in set(self._held) - set(holds):
            if self._held_at.get(model, 0) <= read_after:
                self.reset(model)
        for model, reason in holds.items():
            if self._held.get(model) != reason:
                self.hold(model, reason)

    def record(self, model: str, *, ok: bool, retry_after: float | None = None) -> None:
        now = self.clock()
        circuit = record(self._circuits.get(model, Circuit()), self.breaker, ok=ok, now=now)
        self._circuits[model] = circuit
        if retry_after:
            self._backoff_until[model] = now + retry_after
        value = 1.0 if model in self._held else _STATE_VALUE[state_at(circuit, self.breaker, now)]
        if self._emitted.get(model) != value:  # most calls leave a closed circuit closed
            self._emit(model, value)

    def _emit(self, model: str, value: float) -> None:
        self._emitted[model] = value
        self.events.emit(CircuitChanged(model, value))

    def health(self) -> list[tuple[str, str, str]]:
        """(model, provider, circuit state) for every concrete model; "not configured" when
        its provider has no credentials (offline, the placeholder draws it instead)."""
        ready = self.registry.ready()
        now = self.clock()
        rows: list[tuple[str, str, str]] = []
        for spec in self.catalog.models.values():
            if spec.virtual or spec.retired or not spec.available:
                continue
            if spec.provider not in ready:
                drawn = " (the placeholder draws it)" if self.registry.placeholder_only else ""
                rows.append((spec.name, spec.provider, f"not configured{drawn}"))
                continue
            state: str = state_at(self._circuits.get(spec.name, Circuit()), self.breaker, now)
            if now < self._backoff_until.get(spec.name, 0.0):
                state = "backing off"
            if spec.name in self._held:
                state = "held open"
            rows.append((spec.name, spec.provider, state))
        return rows
