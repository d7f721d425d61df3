"""Budget gauges and open reservations, read from the ledger at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.budget import BudgetSpec
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
            limit.add_metric(labels, usage.spec.limit_micros / 1_000_000)
            left.add_metric(labels, usage.left_micros / 1_000_000)
        yield limit
        yield left
        yield GaugeMetricFamily(
            "imagegate_reservations_open",
            "Budget reservations held by calls in flight",
            value=ledger.open_reservations(),
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
