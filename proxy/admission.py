"""Admission in the shell: the core's decision (`policies.admission`) and the rate limits
(the `LimitStore` port), as values the driver (`proxy.service`) dispatches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from policies.admission import Admitted, Denied, PromptPolicy, admit
from policies.ratelimit import Allowed, Limited, Oversized, Rate
from proxy.authentication import Caller
from proxy.ports import LimitStore

__all__ = ["Admission", "RateHeaders"]


@dataclass(frozen=True, slots=True)
class RateHeaders:
    limit: int
    remaining: int
    reset_seconds: float

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": _duration(self.reset_seconds),
        }


@dataclass(frozen=True, slots=True)
class Admission:
    limits: LimitStore
    policy: PromptPolicy
    clock: Callable[[], float]

    def decide(self, caller: Caller, model: str, prompt: str | None) -> Admitted | Denied:
        return admit(caller.key, model, prompt, self.policy)

    async def take_request(self, caller: Caller) -> Allowed | Limited | Oversized | None:
        """One request off the key's request rate; None when the key has none (no await:
        the open gateway's hit path pays nothing here)."""
        key = caller.key
        if key is None or key.requests_per_minute is None:
            return None
        rate = Rate(key.requests_per_minute)
        return await self.limits.take_all([(f"req:{key.name}", rate, 1)], self.clock())

    async def take_images(self, caller: Caller, count: int) -> Allowed | Limited | Oversized:
        key = caller.key
        if key is None or key.images_per_minute is None:
            return Allowed(0, 0, 0.0)
        rate = Rate(key.images_per_minute, unit="images")
        return await self.limits.take_all([(f"img:{key.name}", rate, count)], self.clock())


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '12ms', '1.5s', '2m3s'."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3g}s" if rest else ""
    return f"{int(minutes)}m{text}" if minutes else text
