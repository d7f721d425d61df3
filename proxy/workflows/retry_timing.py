"""How long a client command waits before trying a gateway request again: exponential
backoff with jitter, or what `retry-after-ms` / `Retry-After` says (capped)."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from typing import Final

__all__ = ["backoff", "retry_after"]

_BACKOFF_BASE: Final = 0.5
_BACKOFF_CAP: Final = 8.0
_RETRY_AFTER_CAP: Final = 120.0


def backoff(attempt: int, rng: random.Random) -> float:
    """Seconds before retry number `attempt` (0 first): half to all of 0.5 * 2**attempt, <= 8."""
    ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0**attempt)
    return ceiling * (0.5 + rng.random() / 2)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, or `Retry-After` in seconds or as an HTTP date; capped."""
    seconds: float | None = None
    try:
        if "retry-after-ms" in headers:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            seconds = float(headers["retry-after"])
    except ValueError:
        seconds = _http_date(headers.get("retry-after", ""))
    if seconds is None or seconds != seconds or seconds < 0:  # absent, NaN or negative
        return None
    return min(seconds, _RETRY_AFTER_CAP)


def _http_date(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
