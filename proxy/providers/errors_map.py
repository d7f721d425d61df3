"""What every adapter maps the same way: HTTP statuses, Retry-After, secrets in messages.

Each adapter catches its own SDK's or HTTP library's exceptions once and turns the status,
detail and headers into one of `policies.errors.ProviderError`'s subclasses here, so a 429
or a 401 means the same thing whichever upstream sent it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from policies.errors import (
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)

__all__ = [
    "CONTENT_POLICY",
    "auth_failed",
    "from_status",
    "looks_like_safety_refusal",
    "retry_after_seconds",
    "scrub",
]

CONTENT_POLICY = "content_policy_violation"
_REJECTED_STATUSES = frozenset({400, 413, 415, 422})
_SAFETY = re.compile(r"nsfw|safety|content.?polic", re.IGNORECASE)
_MAX_DETAIL = 500  # characters of an upstream message kept in ours


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The upstream's wait hint: `retry-after-ms` (ms), else `retry-after` (seconds or an
    HTTP date). None when absent or unreadable; never negative."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when - (time.time() if now is None else now))
    return max(0.0, value) if math.isfinite(value) else None


def scrub(text: str, secret: str) -> str:
    """`text` without `secret` in it, cut to a readable length."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def looks_like_safety_refusal(text: str) -> bool:
    """Whether an upstream's failure text reads as a safety filter's refusal."""
    return bool(_SAFETY.search(text))


def auth_failed(provider: str, status: int | None = None) -> ProviderUnavailable:
    """The upstream refused our credentials. Never quotes the upstream (it may echo the key)."""
    how = f" (HTTP {status})" if status is not None else ""
    return ProviderUnavailable(
        f"The upstream provider '{provider}' refused the gateway's credentials{how}; "
        f"check api_key in [providers.{provider}].",
        code="upstream_auth_failed",
    )


def from_status(
    provider: str,
    status: int,
    detail: str,
    *,
    secret: str,
    retry_after: float | None = None,
    content_policy: bool = False,
) -> ProviderError:
    """The gateway error for an upstream HTTP error `status` with message `detail`.
    `content_policy`: the upstream said (in its own terms) that a safety filter refused."""
    detail = scrub(detail.strip() or "no details", secret)
    if status in (401, 403):
        return auth_failed(provider, status)
    if status == 429:
        return ProviderUnavailable(
            f"The upstream provider '{provider}' is rate limiting the gateway: {detail}",
            code="upstream_rate_limited",
            retry_after=retry_after,
        )
    if status == 404:
        return ProviderUnavailable(
            f"The upstream provider '{provider}' does not know this model: {detail}",
            code="upstream_model_not_found",
        )
    if status in _REJECTED_STATUSES:
        return ProviderRejected(
            f"The upstream provider '{provider}' rejected the request: {detail}",
            code=CONTENT_POLICY if content_policy else None,
        )
    return ProviderUnavailable(
        f"The upstream provider '{provider}' failed (HTTP {status}): {detail}",
        retry_after=retry_after,
    )
