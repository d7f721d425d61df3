"""Counters and histograms over plain numbers, for the metrics every request moves.

prometheus-client's Counter and Histogram take a lock per value changed (a request's
counter, its duration's sum and bucket, its cache lookup: four locks per hit). These keep a
plain int (and a float sum) per label set, changed on the event loop only, and give a
scrape exactly the samples prometheus-client's own would (`_total`, `_created`; `_bucket`
by `le`, `_count`, `_sum`, `_created`), in the same order. One process only: in
multiprocess mode the values must live in prometheus-client's files (`proxy.observability
.metrics`).
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.utils import INF, floatToGoString

__all__ = ["PlainCounter", "PlainHistogram"]

# prometheus-client's own switch for the `_created` series, read as it reads it.
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true", "1", "t",
)  # fmt: skip


class _Count:
    """One label set of a `PlainCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class _Spread:
    """One label set of a `PlainHistogram`: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount
        self.sum += amount


class _Plain:
    """A labelled metric over plain numbers, changed on the event loop only; a scrape (in a
    thread) reads a copy of its label sets. Collected like prometheus-client's own."""

    kind = ""
    suffix = ""  # what prometheus-client strips from a name given with it ("_total")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name.removesuffix(self.suffix) if self.suffix else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        if registry is not None:
            registry.register(self)  # type: ignore[arg-type]

    def _child(self, values: tuple[str, ...]) -> Any:
        raise NotImplementedError

    def labels(self, *values: object) -> Any:
        """The label set's child (made once), as prometheus-client's `labels()`."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child(key)
        return child

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, self.kind)]


class PlainCounter(_Plain):
    """prometheus-client's labelled Counter (same samples: `_total`, `_created`), on ints."""

    kind = "counter"
    suffix = "_total"

    def _child(self, values: tuple[str, ...]) -> _Count:
        return _Count()

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        for values, child in self._children.copy().items():
            labels = dict(zip(self.labelnames, values, strict=True))
            metric.add_sample(self.name + "_total", labels, float(child.value))
            if _CREATED:
                metric.add_sample(self.name + "_created", dict(labels), child.created)
        return [metric]


class PlainHistogram(_Plain):
    """prometheus-client's labelled Histogram (same samples: `_bucket` by `le`, `_count`,
    `_sum`, `_created`), on ints and one float sum per label set."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        self.bounds = [float(b) for b in buckets]
        if self.bounds[-1] != INF:
            self.bounds.append(INF)
        self._le = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry=registry)

    def _child(self, values: tuple[str, ...]) -> _Spread:
        return _Spread(self.bounds)

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        for values, child in self._children.copy().items():
            series = list(zip(self.labelnames, values, strict=True))
            total = 0.0
            for le, count in zip(self._le, list(child.counts), strict=True):
                total += count
                metric.add_sample(self.name + "_bucket", dict([*series, ("le", le)]), total)
            metric.add_sample(self.name + "_count", dict(series), total)
            if self.bounds[0] >= 0:
                metric.add_sample(self.name + "_sum", dict(series), child.sum)
            if _CREATED:
                metric.add_sample(self.name + "_created", dict(series), child.created)
        return [metric]
