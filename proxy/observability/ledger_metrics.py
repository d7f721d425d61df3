"""Budget gauges, open reservations, over-quote bills, orphaned calls and the stores' sizes,
read through the ports before each scrape (so every worker process reports the same
totals, and no store is read on the event loop or from the collector's thread)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.budget import MICROS_PER_USD, BudgetSpec, BudgetUsage
from proxy.config_cost import CostSettings
from proxy.ports import StoreStats
from proxy.stores.build import Stores

__all__ = ["LedgerCollector"]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    usages: tuple[BudgetUsage, ...] = ()
    open_reservations: int = 0
    over_quote: tuple[tuple[str, str, int], ...] = ()
    orphaned: int = 0
    entries: StoreStats = field(default_factory=lambda: StoreStats(0, 0))
    blobs: StoreStats = field(default_factory=lambda: StoreStats(0, 0))


class LedgerCollector(Collector):
    def __init__(self, stores: Stores, cost: CostSettings, clock: Callable[[], float]) -> None:
        self._stores, self._cost, self._clock = stores, cost, clock
        self._seen = _Snapshot()

    async def refresh(self) -> None:
        """Read what the next `collect` reports (the /metrics route awaits it first)."""
        stores = self._stores
        specs = [*self._config_budgets()]
        for key in await stores.keys.list(include_revoked=False):
            spec = key.budget_spec()
            if spec is not None:
                specs.append(spec)
        usages = await stores.ledger.budget_left(specs, self._clock()) if specs else []
        totals = await stores.reports.totals()
        self._seen = _Snapshot(
            usages=tuple(usages),
            open_reservations=totals["open_reservations"],
            over_quote=tuple(await stores.reports.over_quote_by_model()),
            orphaned=totals["orphaned"],
            entries=await stores.entries.stats(),
            blobs=await stores.blobs.stats(),
        )

    def collect(self) -> Iterator[Metric]:
        seen = self._seen
        yield from _budgets(seen.usages)
        yield GaugeMetricFamily(
            "imagegate_reservations_open",
            "Budget reservations held by calls in flight",
            value=seen.open_reservations,
        )
        over = CounterMetricFamily(
            "imagegate_over_quote_usd",
            "Dollars upstreams billed beyond the worst-case quote (never charged to a budget)",
            labels=("provider", "model"),
        )
        for provider, model, micros in seen.over_quote:
            over.add_metric((provider, model), micros / MICROS_PER_USD)
        yield over
        yield CounterMetricFamily(
            "imagegate_reservations_orphaned",
            "Calls whose process died mid-call, settled at their quote as orphaned rows",
            value=seen.orphaned,
        )
        yield from _stores(seen.entries, seen.blobs)

    def _config_budgets(self) -> Iterator[BudgetSpec]:
        if self._cost.global_budget is not None:
            yield self._cost.global_budget
        yield from self._cost.team_budgets


def _budgets(usages: tuple[BudgetUsage, ...]) -> Iterator[Metric]:
    limit = GaugeMetricFamily(
        "imagegate_budget_limit_usd", "Budget per window, dollars", labels=("scope", "name")
    )
    left = GaugeMetricFamily(
        "imagegate_budget_remaining_usd",
        "Budget left in the current window (spent and reserved taken off), dollars",
        labels=("scope", "name"),
    )
    for usage in usages:
        labels = (usage.spec.scope, usage.spec.name)
        limit.add_metric(labels, usage.spec.limit_micros / MICROS_PER_USD)
        left.add_metric(labels, usage.left_micros / MICROS_PER_USD)
    yield limit
    yield left


def _stores(entries: StoreStats, blobs: StoreStats) -> Iterator[Metric]:
    """What the stores hold, what was evicted and healed."""
    yield GaugeMetricFamily(
        "imagegate_cache_entries", "Cached entries (request key x index)", value=entries.items
    )
    yield GaugeMetricFamily("imagegate_cache_blobs", "Stored image blobs", value=blobs.items)
    yield GaugeMetricFamily("imagegate_cache_bytes", "Bytes of stored images", value=blobs.bytes)
    yield CounterMetricFamily(
        "imagegate_cache_evictions", "Blobs evicted by the size bound", value=blobs.evictions
    )
    yield CounterMetricFamily(
        "imagegate_blobs_healed",
        "Blobs dropped: their bytes no longer hashed to their address",
        value=blobs.healed,
    )
