"""Prometheus metrics, one registry per app. Labels are bounded: never a prompt, key or secret.

One process keeps its values in memory. Under `imagegate serve --workers N` the supervisor
sets `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode) before it starts the
workers: each worker writes its counters and histograms to its own memory-mapped files
there, and whichever worker answers a scrape sums every worker's files, so each scrape is
the whole gateway's total and a counter never goes back. Gauges a worker holds for itself
(circuit state) are the largest of the live workers' values. The collectors that read the
shared stores at scrape time (cache size, budgets) read them once, in either mode.

In one process, the three metrics every request moves (requests, their duration, cache
lookups) are plain integers (`PlainCounter`, `PlainHistogram`) exposed by a collector with
the very samples prometheus-client's Counter and Histogram would give: a request adds to an
int instead of taking a lock per value (measured in bench/events_micro.py). In multiprocess
mode they stay prometheus-client's, whose values live in the shared files.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.observability.plain_metrics import PlainCounter, PlainHistogram

__all__ = ["MULTIPROCESS_ENV", "Metrics", "watch_loop_lag"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it at import
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    _children: dict[tuple[object, ...], Any] = field(default_factory=dict)

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept once made: `labels()` takes a lock and builds a key
        on every call, and a hit needs several. Bounded like the label sets themselves."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def __post_init__(self) -> None:
        r: CollectorRegistry | None = self.registry
        shared = os.environ.get(MULTIPROCESS_ENV)
        if shared:  # values live in this worker's files; a scrape sums every worker's
            MultiProcessCollector(self.registry, path=shared)  # type: ignore[no-untyped-call]
            r = None
        # Every request's metrics: plain numbers in one process (see the module's docstring).
        counter: type[Counter | PlainCounter] = PlainCounter if r else Counter
        histogram: type[Histogram | PlainHistogram] = PlainHistogram if r else Histogram
        self.requests = counter(
            "imagegate_http_requests_total",
            "HTTP requests by route template, method and status",
            ("route", "method", "status"),
            registry=r,
        )
        self.request_seconds = histogram(
            "imagegate_http_request_duration_seconds",
            "HTTP request duration by route template and cache outcome",
            ("route", "cache"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_lookups = counter(
            "imagegate_cache_lookups_total",
            "Image requests by cache outcome (hit, miss, partial, coalesced, bypass)",
            ("outcome",),
            registry=r,
        )
        self.provider_calls = Counter(
            "imagegate_provider_calls_total",
            "Upstream calls by provider, model and outcome",
            ("provider", "model", "outcome"),
            registry=r,
        )
        self.provider_seconds = Histogram(
            "imagegate_provider_latency_seconds",
            "Upstream call latency by provider and model",
            ("provider", "model"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "imagegate_fallbacks_total",
            "Requests that fell back from one model to another",
            ("from_model", "to_model"),
            registry=r,
        )
        self.spend = Counter(
            "imagegate_spend_usd",
            "Dollars charged for generations by key name, team and model",
            ("key", "team", "model"),
            registry=r,
        )
        self.saved = Counter(
            "imagegate_saved_usd",
            "Dollars cache hits saved (what they would have cost)",
            ("key", "team", "model"),
            registry=r,
        )
        self.denials = Counter(
            "imagegate_policy_denials",
            "Requests refused by policy, by reason",
            ("reason",),
            registry=r,
        )
        self.retries = Counter(
            "imagegate_provider_retries",
            "Calls made after an earlier attempt of the same request failed",
            ("provider", "model"),
            registry=r,
        )
        self.circuit_state = Gauge(
            "imagegate_circuit_state",
            "Circuit per model: 0 closed, 0.5 half-open, 1 open",
            ("model",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.backend_seconds = Histogram(
            "imagegate_backend_seconds",
            "Calls to a shared-mode backend (redis, postgres, s3) by port operation",
            ("backend", "operation"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "imagegate_backend_errors",
            "Calls to a shared-mode backend that could not reach it",
            ("backend",),
            registry=r,
        )
        self.loop_lag = Histogram(
            "imagegate_event_loop_lag_seconds",
            "How late the event loop ran a periodic timer: time no request could be served",
            buckets=_LAG_BUCKETS,
            registry=r,
        )


def watch_loop_lag(
    histogram: Histogram, interval: float
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """An app lifetime that sleeps `interval` over and over and observes how much later than
    asked each sleep ended: a blocked or overloaded loop shows at once. Off when 0."""

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            histogram.observe(max(0.0, loop.time() - due))

    @asynccontextmanager
    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(probe()) if interval > 0 else None
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return lifetime
