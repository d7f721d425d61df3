"""The upstreams' own rate limits, kept by the gateway: a bounded wait, then fall back.

`[providers.<name>] requests_per_minute` is the upstream's limit. Rather than collecting 429s
from it, a call waits for a token up to `max_wait` seconds; past that the model is skipped
(the router falls back to the next candidate) without counting against its circuit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from policies.errors import ProviderUnavailable
from policies.ratelimit import Bucket, Limited, Oversized, Rate, take

__all__ = ["LOCAL_LIMIT_CODE", "UpstreamLimiter"]

LOCAL_LIMIT_CODE = "upstream_rate_limited_locally"


@dataclass
class UpstreamLimiter:
    rates: Mapping[str, Rate]
    max_wait: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, Bucket] = field(default_factory=dict)

    async def acquire(self, provider: str, calls: int) -> None:
        rate = self.rates.get(provider)
        if rate is None:
            return
        waited = 0.0
        while True:
            bucket, decision = take(self._buckets.get(provider), rate, self.clock(), calls)
            self._buckets[provider] = bucket
            if isinstance(decision, Oversized):
                calls = rate.capacity  # a fan-out bigger than the burst waits for a full bucket
                continue
            if not isinstance(decision, Limited):
                return
            if waited + decision.retry_after > self.max_wait:
                raise ProviderUnavailable(
                    f"'{provider}' is at its rate limit ({rate.per_minute}/min); "
                    "trying another model.",
                    code=LOCAL_LIMIT_CODE,
                    retry_after=decision.retry_after,
                )
            waited += decision.retry_after
            await asyncio.sleep(decision.retry_after)
