"""The plain-number metrics of the request path expose exactly what prometheus-client's
Counter and Histogram would: the same /metrics text for the same observations."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from proxy.observability import plain_metrics
from proxy.observability.plain_metrics import PlainCounter, PlainHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OBSERVED = (0.0, 0.0004, 0.001, 0.0010001, 0.003, 0.2, 0.25, 7.0, 59.9, 60.0, 61.0, 1e9)


def _fill(registry: CollectorRegistry, counter: type, histogram: type) -> None:
    requests = counter("x_requests_total", "Requests", ("route", "status"), registry=registry)
    seconds = histogram(
        "x_request_seconds", "Durations", ("route", "cache"), buckets=BUCKETS, registry=registry
    )
    for i, amount in enumerate(OBSERVED):
        requests.labels("/a", 200 if i % 3 else 404).inc()
        seconds.labels("/a", "hit" if i % 2 else "miss").observe(amount)
    requests.labels("/b", "200")  # a label set made and never counted


@pytest.mark.parametrize("created", [True, False])
def test_the_same_text_as_prometheus_clients_own(monkeypatch, created) -> None:
    monkeypatch.setattr("time.time", lambda: 1700000000.25)
    monkeypatch.setattr(plain_metrics, "_CREATED", created)
    monkeypatch.setattr("prometheus_client.metrics._use_created", created)
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    _fill(theirs, Counter, Histogram)
    _fill(ours, PlainCounter, PlainHistogram)
    assert generate_latest(ours).decode() == generate_latest(theirs).decode()
    assert ours.get_sample_value("x_requests_total", {"route": "/a", "status": "404"}) == 4


def test_a_scrape_names_the_families_as_prometheus_client_does() -> None:
    registry = CollectorRegistry()
    PlainCounter("x_total", "X", ("a",), registry=registry)
    PlainHistogram("x_seconds", "S", ("a",), buckets=(1,), registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("x_total", "again", ("a",), registry=registry)
    with pytest.raises(ValueError, match="labels"):
        PlainCounter("y_total", "Y", ("a", "b"), registry=None).labels("only one")
