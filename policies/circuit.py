"""A circuit breaker per model: open after repeated failures, half-open after a cool-down.

closed --(threshold failures in a row)--> open --(cool-down passed)--> half-open
half-open --(probe succeeds)--> closed;  half-open --(probe fails)--> open again
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["Breaker", "Circuit", "record", "state_at"]

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
