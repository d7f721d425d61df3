"""The gateway's event-loop lag during one load run, read from its own `/metrics`.

`imagegate_event_loop_lag_seconds` is a histogram of how late a periodic timer fired (every
`[server] loop_lag_interval_seconds`, 0.1 s by default): a loop blocked for 80 ms shows as one
observation in the 0.1 s bucket. The bench scrapes it before and after a run and reports the
difference: how many observations, their mean, and the bucket bounds that hold the p99 and
the largest one. Bucket bounds are all a histogram keeps, so "p99 <= 0.05 s" is the claim.
"""

from __future__ import annotations

import math
import re
import urllib.request
from dataclasses import dataclass

__all__ = ["LagHistogram", "lag_between", "parse_lag", "scrape_lag"]

NAME = "imagegate_event_loop_lag_seconds"
_BUCKET = re.compile(NAME + r'_bucket\{(?:[^}]*,)?le="([^"]+)"(?:,[^}]*)?\}\s+(\S+)')
_SUM = re.compile(NAME + r"_sum(?:\{[^}]*\})?\s+(\S+)")
_COUNT = re.compile(NAME + r"_count(?:\{[^}]*\})?\s+(\S+)")


@dataclass(frozen=True, slots=True)
class LagHistogram:
    """Cumulative bucket counts (upper bound in seconds -> count), their sum and count;
    summed over every worker's series the exposition holds."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float


def parse_lag(exposition: str) -> LagHistogram | None:
    """The lag histogram of a Prometheus text exposition; None when it has none."""
    buckets: dict[float, float] = {}
    for bound, value in _BUCKET.findall(exposition):
        le = math.inf if bound == "+Inf" else float(bound)
        buckets[le] = buckets.get(le, 0.0) + float(value)
    if not buckets:
        return None
    total = sum(float(v) for v in _SUM.findall(exposition))
    count = sum(float(v) for v in _COUNT.findall(exposition))
    return LagHistogram(tuple(sorted(buckets.items())), total, count)


def scrape_lag(base_url: str, token: str | None = None) -> LagHistogram | None:
    """GET /metrics (with the metrics key as a Bearer token when keys are on)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(base_url + "/metrics", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            return parse_lag(resp.read().decode())
    except OSError:
        return None


def _bound(buckets: list[tuple[float, float]], rank: float) -> float:
    for le, cumulative in buckets:
        if cumulative >= rank:
            return le
    return math.inf


def lag_between(before: LagHistogram | None, after: LagHistogram | None) -> dict[str, object]:
    """What the loop lagged between two scrapes: samples, mean, and p99 and max as the
    upper bounds of the buckets that hold them (seconds; `inf`: above the largest bucket)."""
    if after is None:
        return {"samples": 0, "note": "no lag histogram on /metrics"}
    earlier = dict(before.buckets) if before is not None else {}
    diff = [(le, count - earlier.get(le, 0.0)) for le, count in after.buckets]
    count = after.count - (before.count if before else 0.0)
    total = after.total - (before.total if before else 0.0)
    if count <= 0:
        return {"samples": 0}
    over = [(le, n) for le, n in diff]
    p99 = _bound(over, 0.99 * count)
    worst = _bound(over, count)
    return {
        "samples": int(count),
        "mean_ms": round(1000 * total / count, 2),
        "p99_le_ms": None if math.isinf(p99) else round(1000 * p99, 1),
        "max_le_ms": None if math.isinf(worst) else round(1000 * worst, 1),
        "over_50ms": int(count - next((n for le, n in over if le >= 0.05), 0.0)),
    }
