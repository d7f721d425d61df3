"""The metrics the gateway exports, and the series names a PromQL expression reads."""

from __future__ import annotations

import re

# Every metric the gateway exports (some arrive in the next release), by type. Rules and
# dashboard queries may use only these, plus Prometheus' own series below.
KNOWN_METRICS: dict[str, str] = {
    "imagegate_http_requests_total": "counter",
    "imagegate_http_request_duration_seconds": "histogram",
    "imagegate_cache_lookups_total": "counter",
    "imagegate_cache_entries": "gauge",
    "imagegate_cache_bytes": "gauge",
    "imagegate_cache_evictions_total": "counter",
    "imagegate_blobs_healed_total": "counter",
    "imagegate_provider_calls_total": "counter",
    "imagegate_provider_latency_seconds": "histogram",
    "imagegate_fallbacks_total": "counter",
    "imagegate_circuit_state": "gauge",
    "imagegate_provider_retries_total": "counter",
    "imagegate_spend_usd_total": "counter",
    "imagegate_saved_usd_total": "counter",
    "imagegate_budget_limit_usd": "gauge",
    "imagegate_budget_remaining_usd": "gauge",
    "imagegate_reservations_open": "gauge",
    "imagegate_policy_denials_total": "counter",
    "imagegate_cache_blobs": "gauge",
    "imagegate_over_quote_usd_total": "counter",
    "imagegate_reservations_orphaned_total": "counter",
    "imagegate_event_loop_lag_seconds": "histogram",
    "imagegate_backend_seconds": "histogram",
    "imagegate_backend_errors_total": "counter",
}
PROMETHEUS_SERIES = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_NOT_METRICS = {
    # binary and modifier keywords
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
    # aggregation operators, which may stand before their `by (...)` clause
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "limitk", "limit_ratio",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: identifiers outside strings, label
    matchers, ranges and label lists that are neither keywords nor function calls."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _NOT_METRICS}


def unknown_metrics(expr: str) -> set[str]:
    bad = set()
    for name in metric_names(expr):
        base = name
        if name.endswith(HISTOGRAM_SUFFIXES) and name not in KNOWN_METRICS:
            base = name.rsplit("_", 1)[0]
            if KNOWN_METRICS.get(base) != "histogram":
                bad.add(name)
                continue
        elif KNOWN_METRICS.get(name) == "histogram":
            bad.add(name)  # a histogram has no bare series: _bucket, _count or _sum
            continue
        if base not in KNOWN_METRICS and base not in PROMETHEUS_SERIES:
            bad.add(name)
    return bad
