"""Budget gauges, open reservations, over-quote bills and orphaned calls, read from the
ledger at scrape time (so every worker process reports the same totals)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.budget import MICROS_PER_USD, BudgetSpec
from proxy.access import Gatekeeper

__all__ = ["LedgerCollector"]


class LedgerCollector(Collector):
    def __init__(self, gate: Gatekeeper) -> None:
        self._gate = gate

    def collect(self) -> Iterator[Metric]:
        ledger = self._gate.ledger
        specs = list(self._budgets())
        limit = GaugeMetricFamily(
            "imagegate_budget_limit_usd", "Budget per window, dollars", labels=("scope", "name")
        )
        left = GaugeMetricFamily(
            "imagegate_budget_remaining_usd",
            "Budget left in the current window (spent and reserved taken off), dollars",
            labels=("scope", "name"),
        )
        for usage in ledger.budget_left(specs, self._gate.clock()) if specs else []:
            labels = (usage.spec.scope, usage.spec.name)
            limit.add_metric(labels, usage.spec.limit_micros / MICROS_PER_USD)
            left.add_metric(labels, usage.left_micros / MICROS_PER_USD)
        yield limit
        yield left
        yield GaugeMetricFamily(
            "imagegate_reservations_open",
            "Budget reservations held by calls in flight",
            value=ledger.open_reservations(),
        )
        over = CounterMetricFamily(
            "imagegate_over_quote_usd",
            "Dollars upstreams billed beyond the worst-case quote (never charged to a budget)",
            labels=("provider", "model"),
        )
        for provider, model, micros in ledger.over_quote_by_model():
            over.add_metric((provider, model), micros / MICROS_PER_USD)
        yield over
        totals = ledger.money_totals()
        yield CounterMetricFamily(
            "imagegate_reservations_orphaned",
            "Calls whose process died mid-call, settled at their quote as orphaned rows",
            value=totals["orphaned"],
        )

    def _budgets(self) -> Iterator[BudgetSpec]:
        cost = self._gate.cost
        if cost.global_budget is not None:
            yield cost.global_budget
        yield from cost.team_budgets
        for key in self._gate.ledger.list_keys(include_revoked=False):
            spec = key.budget_spec()
            if spec is not None:
                yield spec
