"""Who may ask for what: a key's model allow-list and the operator's prompt policy.

Pure: the driver (`proxy.service`) asks `admit` once per request, on the full path and on
the memo's repeat path alike, and dispatches the value it gets back. The allow-list lives
here and nowhere else; the rate limits (`policies.ratelimit`) and budgets
(`policies.budget`) are decided next to the stores that count them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from policies.errors import ContentPolicyViolation, GatewayError, InvalidRequest
from policies.ledger_models import KeyRecord

__all__ = ["ADMITTED", "Admitted", "Denied", "PromptPolicy", "admit"]

Reason = Literal["model", "prompt_policy"]


@dataclass(frozen=True, slots=True)
class Admitted:
    """The request may go on (to the rate limit, the cache and the budgets)."""


ADMITTED = Admitted()  # one value: the hit path allocates nothing to be admitted


@dataclass(frozen=True, slots=True)
class Denied:
    """Refused: `reason` is what the denial counter is labelled with, `error` what the
    client is told (OpenAI-style, saying what to change)."""

    reason: Reason
    error: GatewayError


@dataclass(frozen=True, slots=True)
class PromptPolicy:
    """The operator's `[policy] deny_patterns`, compiled once at start."""

    deny: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str]) -> PromptPolicy:
        return cls(tuple(re.compile(p) for p in patterns))

    def matches(self, prompt: str | None) -> bool:
        return bool(prompt) and any(p.search(prompt or "") for p in self.deny)


def admit(
    key: KeyRecord | None, model: str, prompt: str | None, policy: PromptPolicy
) -> Admitted | Denied:
    """The key's model list, then the prompt policy. `key` None: the gateway is open (every
    model allowed). `prompt` None: nothing to check (a variation; or a repeat the memo
    answers, whose prompt passed when its answer was kept)."""
    if key is not None and not key.allows_model(model):
        allowed = ", ".join(key.models or ())
        return Denied(
            "model",
            InvalidRequest(
                f"This API key may not use the model '{model}'. Allowed: {allowed}.",
                param="model",
                code="model_not_allowed",
            ),
        )
    if policy.deny and policy.matches(prompt):
        return Denied(
            "prompt_policy",
            ContentPolicyViolation(
                "Your request was rejected by this gateway's content policy. Change the "
                "prompt; the operator's [policy] deny_patterns matched it.",
                param="prompt",
            ),
        )
    return ADMITTED
