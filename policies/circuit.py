"""A circuit breaker per model: open after repeated failures, half-open after a cool-down.

closed --(threshold failures in a row)--> open --(cool-down passed)--> half-open
half-open --(probe succeeds)--> closed;  half-open --(probe fails)--> open again

`blocked_by` says why a model takes no calls now, and when it may again: an upstream's
Retry-After, a circuit's cool-down, or a hold (an upstream billed beyond the quote) that
lasts until an operator resets it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["Blocked", "Breaker", "Circuit", "blocked_by", "record", "state_at"]

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class Breaker:
    threshold: int = 3  # consecutive failures that open the circuit
    cooldown: float = 30.0  # seconds before one probe is let through


@dataclass(frozen=True, slots=True)
class Circuit:
    failures: int = 0
    opened_at: float | None = None


def state_at(circuit: Circuit, breaker: Breaker, now: float) -> State:
    if circuit.opened_at is None:
        return "closed"
    return "half_open" if now - circuit.opened_at >= breaker.cooldown else "open"


def record(circuit: Circuit, breaker: Breaker, *, ok: bool, now: float) -> Circuit:
    if ok:
        return Circuit()
    failures = circuit.failures + 1
    if state_at(circuit, breaker, now) == "half_open" or failures >= breaker.threshold:
        return replace(circuit, failures=failures, opened_at=now)
    return replace(circuit, failures=failures)


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a model takes no calls now. `retry_after`: seconds until it may (None: not by
    waiting; an operator must reset it). `upstream`: the provider itself asked to wait."""

    reason: str
    retry_after: float | None = None
    upstream: bool = False


def blocked_by(
    circuit: Circuit,
    breaker: Breaker,
    now: float,
    *,
    backoff_until: float = 0.0,
    held: str | None = None,
) -> Blocked | None:
    """None when the model may take a call now (closed, or half-open for its probe)."""
    if held is not None:
        return Blocked(f"held open: {held}")
    if now < backoff_until:
        return Blocked(
            f"the provider asked to wait (Retry-After: {_seconds(backoff_until - now)} s left)",
            backoff_until - now,
            upstream=True,
        )
    if state_at(circuit, breaker, now) == "open" and circuit.opened_at is not None:
        left = circuit.opened_at + breaker.cooldown - now
        return Blocked(
            f"circuit open after repeated failures (a probe is let through in {_seconds(left)} s)",
            left,
        )
    return None


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3g}"
