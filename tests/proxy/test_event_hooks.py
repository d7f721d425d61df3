"""Observability as events: the hooks turn each event into its metric sample and its log
line, `Events` routes each kind to the hooks that keep it, and the generator and the router
emit what happened (asserted on a ListHook, driving the real code)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from proxy.observability.events import (
    BackendFailed,
    CacheLookedUp,
    Charged,
    CircuitChanged,
    ClientDisconnected,
    ClientTimedOut,
    Denied,
    ErrorAnswered,
    Event,
    Events,
    FellBack,
    ListHook,
    OverQuoted,
    ProviderCalled,
    RequestCompleted,
    RequestFailed,
    ReservationOrphaned,
    Saved,
    StoreFailed,
)
from proxy.observability.hooks import LogHook, MetricsHook
from proxy.observability.logging import configure_logging, reset_logging
from proxy.observability.metrics import Metrics
from tests.proxy.test_log_lines import Recorder

GEN = "/v1/images/generations"


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# -- MetricsHook --------------------------------------------------------------------------


def test_a_request_counts_by_route_method_status_and_times_by_cache() -> None:
    metrics = Metrics()
    hook = MetricsHook(metrics)
    hook(RequestCompleted(GEN, "POST", 200, "hit", 0.002))
    hook(RequestCompleted(GEN, "POST", 200, "hit", 0.003))
    hook(RequestCompleted(GEN, "POST", 429, "none", 0.001))
    requests = "imagegate_http_requests_total"
    assert sample(metrics, requests, route=GEN, method="POST", status="200") == 2
    assert sample(metrics, requests, route=GEN, method="POST", status="429") == 1
    seconds = "imagegate_http_request_duration_seconds"
    assert sample(metrics, f"{seconds}_count", route=GEN, cache="hit") == 2
    assert sample(metrics, f"{seconds}_sum", route=GEN, cache="hit") == pytest.approx(0.005)
    assert sample(metrics, f"{seconds}_count", route=GEN, cache="none") == 1


def test_every_metric_event_moves_its_own_sample() -> None:
    metrics = Metrics()
    hook = MetricsHook(metrics)
    hook(CacheLookedUp("hit"))
    hook(CacheLookedUp("hit"))
    hook(CacheLookedUp("miss"))
    hook(ProviderCalled("openai", "gpt-image-1", "ok", 1.5))
    hook(ProviderCalled("openai", "gpt-image-1", "upstream_timeout", 4.0, error="slow"))
    hook(FellBack("flux-schnell", "flux-dev", "replicate"))
    hook(Denied("budget"))
    hook(Charged("web-app", "blue", "gpt-image-1", 42_000))
    hook(Saved(None, None, "gpt-image-1", 500_000))
    hook(CircuitChanged("flux-dev", 0.5))

    assert sample(metrics, "imagegate_cache_lookups_total", outcome="hit") == 2
    assert sample(metrics, "imagegate_cache_lookups_total", outcome="miss") == 1
    calls = "imagegate_provider_calls_total"
    assert sample(metrics, calls, provider="openai", model="gpt-image-1", outcome="ok") == 1
    assert (
        sample(metrics, calls, provider="openai", model="gpt-image-1", outcome="upstream_timeout")
        == 1
    )
    latency = "imagegate_provider_latency_seconds_sum"
    assert sample(metrics, latency, provider="openai", model="gpt-image-1") == 5.5
    assert (
        sample(metrics, "imagegate_provider_retries_total", provider="replicate", model="flux-dev")
        == 1
    )
    assert (
        sample(metrics, "imagegate_fallbacks_total", from_model="flux-schnell", to_model="flux-dev")
        == 1
    )
    assert sample(metrics, "imagegate_policy_denials_total", reason="budget") == 1
    spend = sample(
        metrics, "imagegate_spend_usd_total", key="web-app", team="blue", model="gpt-image-1"
    )
    assert spend == pytest.approx(0.042)
    saved = sample(metrics, "imagegate_saved_usd_total", key="", team="", model="gpt-image-1")
    assert saved == pytest.approx(0.5)
    assert sample(metrics, "imagegate_circuit_state", model="flux-dev") == 0.5


def test_the_metrics_hook_ignores_what_it_does_not_count() -> None:
    metrics = Metrics()
    before = {s.name: s.value for f in metrics.registry.collect() for s in f.samples}
    MetricsHook(metrics)(StoreFailed("k" * 64, "gpt-image-1", "disk full"))
    after = {s.name: s.value for f in metrics.registry.collect() for s in f.samples}
    assert after == before


# -- LogHook ------------------------------------------------------------------------------


@pytest.fixture
def json_lines() -> Iterator[Recorder]:
    """Production's JSON lines (the request line skips the processors), written at once."""
    out = Recorder()
    stream = io.TextIOWrapper(out)  # kept: a collected wrapper closes `out`
    configure_logging("info", "json", stream=stream, flush_ms=0)
    try:
        yield out
    finally:
        reset_logging()


def lines(out: Recorder) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def hit(cache: str = "hit", status: int = 200, route: str = GEN) -> RequestCompleted:
    fields: dict[str, object] = {"key": "sk-abc", "model": "gpt-image-1"}
    return RequestCompleted(route, "POST", status, cache, 0.00125, fields, "req_1")


def test_the_request_line_keeps_its_fields_and_their_order(json_lines: Recorder) -> None:
    LogHook()(hit())
    [line] = lines(json_lines)
    assert list(line)[:8] == [
        "method", "route", "status", "cache", "ms", "key", "model", "request_id",
    ]  # fmt: skip
    assert {k: line[k] for k in ("event", "level", "status", "cache", "ms", "request_id")} == {
        "event": "http.request_completed",
        "level": "info",
        "status": 200,
        "cache": "hit",
        "ms": 1.25,
        "request_id": "req_1",
    }
    assert "sample_rate" not in line


def test_only_image_routes_have_a_request_line(json_lines: Recorder) -> None:
    LogHook()(hit(route="/healthz"))
    assert lines(json_lines) == []


def test_hit_lines_can_be_sampled_misses_and_errors_never(json_lines: Recorder) -> None:
    hook = LogHook(sample_hits=0.1)
    for _ in range(25):
        hook(hit())
    hook(hit(cache="miss"))
    hook(hit(status=500))
    written = lines(json_lines)
    hits = [r for r in written if r["cache"] == "hit" and r["status"] == 200]
    assert len(hits) == 3  # the 1st, 11th and 21st
    assert all(r["sample_rate"] == 0.1 for r in hits)
    assert [(r["cache"], r["status"]) for r in written[-2:]] == [("miss", 200), ("hit", 500)]
    assert "sample_rate" not in written[-1]


def test_no_hit_lines_at_zero_and_rates_outside_zero_to_one_are_refused(
    json_lines: Recorder,
) -> None:
    hook = LogHook(sample_hits=0.0)
    for _ in range(5):
        hook(hit())
    assert lines(json_lines) == []
    with pytest.raises(ValueError, match="sample_hits"):
        LogHook(sample_hits=1.5)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            ProviderCalled("openai", "gpt-image-1", "ok", 1.0, 2, images=4, calls=1, cost_micros=7),
            {
                "event": "provider.called", "log_level": "info", "provider": "openai",
                "model": "gpt-image-1", "attempt": 2, "images": 4, "calls": 1, "cost_micros": 7,
            },
        ),
        (
            ProviderCalled("fal", "flux-dev", "upstream_error", 1.0, 1, error="it broke"),
            {
                "event": "provider.call_failed", "log_level": "warning", "provider": "fal",
                "model": "flux-dev", "attempt": 1, "code": "upstream_error", "error": "it broke",
            },
        ),
        (
            OverQuoted("openai", "gpt-image-1.5", 250_000, 3_200_010),
            {
                "event": "budget.over_quote", "log_level": "warning", "provider": "openai",
                "model": "gpt-image-1.5", "quote_usd": "0.25", "reported_usd": "3.20001",
                "over_quote_usd": "2.95001",
            },
        ),
        (
            ReservationOrphaned("flux-dev", "web-app", 30_000, "replicate", "req_9"),
            {
                "event": "budget.reservation_orphaned", "log_level": "warning", "key": "web-app",
                "model": "flux-dev", "provider": "replicate", "charged_usd": "0.03",
                "request_id": "req_9",
            },
        ),
        (
            StoreFailed("0123456789abcdef0123", "gpt-image-1", "disk full"),
            {
                "event": "cache.store_failed", "log_level": "error", "key": "0123456789ab",
                "model": "gpt-image-1", "error": "disk full",
            },
        ),
        (
            ErrorAnswered(503, "no_route", "No model can serve this."),
            {
                "event": "http.error", "log_level": "warning", "status": 503,
                "code": "no_route", "error": "No model can serve this.",
            },
        ),
        (
            ClientDisconnected("/v1/images/edits", "Connection lost"),
            {
                "event": "http.client_disconnected", "log_level": "info",
                "path": "/v1/images/edits", "detail": "Connection lost",
            },
        ),
        (
            ClientTimedOut("header", 10.0),
            {"event": "http.header_timeout", "log_level": "info", "seconds": 10.0},
        ),
        (
            ClientTimedOut("body", 30.0, 512),
            {"event": "http.body_timeout", "log_level": "info", "seconds": 30.0, "received": 512},
        ),
    ],
)  # fmt: skip
def test_each_event_has_its_line(event: Event, expected: dict[str, object]) -> None:
    with capture_logs() as logs:
        LogHook()(event)
    assert logs == [expected]


def test_a_client_error_answered_is_no_warning() -> None:
    with capture_logs() as logs:
        LogHook()(ErrorAnswered(400, "invalid_size", "size must be WxH"))
    assert logs == []


def test_failures_keep_their_traceback() -> None:
    try:
        raise OSError("database is locked")
    except OSError as exc:
        boom = exc
    with capture_logs() as logs:
        hook = LogHook()
        hook(BackendFailed("ledger.sweep", str(boom), boom))
        hook(BackendFailed("redis", "connection refused"))
        hook(RequestFailed("/v1/images/generations", boom))
    assert [(r["event"], r["log_level"], r.get("exc_info")) for r in logs] == [
        ("ledger.sweep_failed", "error", boom),
        ("redis_failed", "error", None),
        ("http.request_failed", "error", boom),
    ]
    assert logs[0]["error"] == "database is locked"


def test_a_failure_with_its_traceback_is_one_json_line(json_lines: Recorder) -> None:
    try:
        raise OSError("database is locked")
    except OSError as exc:
        LogHook()(BackendFailed("ledger.sweep", str(exc), exc))
    [line] = lines(json_lines)
    assert line["event"] == "ledger.sweep_failed" and line["level"] == "error"
    assert "Traceback" in str(line["exception"]) and "database is locked" in str(line["exception"])


# -- Events and ListHook ------------------------------------------------------------------


def test_events_reach_every_hook_in_order_and_typed_hooks_only_their_kinds() -> None:
    seen: list[str] = []
    listed = ListHook()

    class OnlyDenials:
        def __call__(self, event: Event) -> None:
            raise AssertionError("Events calls the handlers, not the hook")

        def handlers(self) -> dict[type, object]:
            return {Denied: lambda e: seen.append(f"denied {e.reason}")}

    events = Events((listed, OnlyDenials(), lambda e: seen.append(type(e).__name__)))
    events.emit(Denied("rate_limit"))
    events.emit(CacheLookedUp("miss"))
    events.emit(Denied("auth"))
    assert seen == ["denied rate_limit", "Denied", "CacheLookedUp", "denied auth", "Denied"]
    assert listed.events == [Denied("rate_limit"), CacheLookedUp("miss"), Denied("auth")]
    assert listed.of(Denied) == [Denied("rate_limit"), Denied("auth")]
    assert listed.of(FellBack) == []


def test_no_hooks_no_work() -> None:
    Events().emit(CacheLookedUp("hit"))  # nothing listens: nothing happens, nothing fails


async def test_logging_sample_hits_zero_keeps_miss_lines_and_drops_hit_lines(
    settings, provider, clock
):
    """`[logging] sample_hits = 0`, end to end: the miss's request line is written, the
    hits' are not, and the hits are still counted (the metric is not sampled)."""
    from dataclasses import replace

    from proxy.config_sections import LoggingSettings
    from tests.conftest import start_gateway

    quiet = replace(settings, logging=LoggingSettings(sample_hits=0.0))
    gw = await start_gateway(quiet, provider, clock)
    try:
        client = gw.client()
        with capture_logs() as lines:
            for _ in range(3):
                await client.images.generate(prompt="a red fox", model="gpt-image-1")
        caches = [line["cache"] for line in lines if line["event"] == "http.request_completed"]
        assert caches == ["miss"]
        assert await gw.metric("imagegate_cache_lookups_total", outcome="hit") == 2
    finally:
        await gw.close()
