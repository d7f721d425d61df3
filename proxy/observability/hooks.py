"""The two hooks every gateway runs: Prometheus metrics and structlog lines.

Each hands `Events` a table of the kinds it keeps (`handlers()`), so an emit goes straight
to the handler; called directly, it dispatches through the same table. The hit path's
speed-ups live here: metric children bound once per label set (`Metrics.child`; the request
counter and histogram as one pair per request shape) and the request line joined from
pieces rendered once (`RequestLines`) straight into the batched writer. Measured in
bench/events_micro.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from policies.budget import MICROS_PER_USD, format_usd
from proxy.observability.events import (
    BackendCalled,
    BackendFailed,
    CacheLookedUp,
    Charged,
    CircuitChanged,
    ClientDisconnected,
    ClientTimedOut,
    Denied,
    ErrorAnswered,
    Event,
    ExperimentCreated,
    ExperimentImageRestored,
    FellBack,
    OverQuoted,
    ProviderCalled,
    RequestCompleted,
    RequestFailed,
    ReservationOrphaned,
    Saved,
    StoreFailed,
)
from proxy.observability.metrics import Metrics
from proxy.observability.request_lines import RequestLines

__all__ = ["LogHook", "MetricsHook"]


class _Dispatching:
    """A hook that handles each event kind by one method, looked up by the event's type;
    `Events` asks for the table once and calls the handlers directly."""

    _on: dict[type[Any], Callable[[Any], None]]

    def __call__(self, event: Event) -> None:
        handle = self._on.get(type(event))
        if handle is not None:
            handle(event)

    def handlers(self) -> Mapping[type[Any], Callable[[Any], None]]:
        return self._on


class MetricsHook(_Dispatching):
    """Events -> the app's Prometheus metrics (proxy.observability.metrics)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # The hit path's children, one lookup per event: (route, method, status, cache) ->
        # (request counter, duration histogram), and outcome -> lookup counter.
        self._per_request: dict[tuple[str, str, int, str], tuple[Any, Any]] = {}
        self._per_lookup: dict[str, Any] = {}
        self._on: dict[type[Any], Callable[[Any], None]] = {
            RequestCompleted: self._request,
            CacheLookedUp: self._lookup,
            ProviderCalled: self._provider,
            FellBack: self._fallback,
            Denied: self._denied,
            Charged: self._charged,
            Saved: self._saved,
            CircuitChanged: self._circuit,
            BackendCalled: self._backend,
        }

    def _request(self, e: RequestCompleted) -> None:
        key = (e.route, e.method, e.status, e.cache)
        children = self._per_request.get(key)
        if children is None:
            m = self.metrics
            children = self._per_request[key] = (
                m.child(m.requests, e.route, e.method, str(e.status)),
                m.child(m.request_seconds, e.route, e.cache),
            )
        children[0].inc()
        children[1].observe(e.seconds)

    def _lookup(self, e: CacheLookedUp) -> None:
        counter = self._per_lookup.get(e.outcome)
        if counter is None:
            m = self.metrics
            counter = self._per_lookup[e.outcome] = m.child(m.cache_lookups, e.outcome)
        counter.inc()

    def _provider(self, e: ProviderCalled) -> None:
        m = self.metrics
        m.child(m.provider_calls, e.provider, e.model, e.outcome).inc()
        m.child(m.provider_seconds, e.provider, e.model).observe(e.seconds)

    def _fallback(self, e: FellBack) -> None:
        m = self.metrics
        m.child(m.retries, e.provider, e.to_model).inc()
        m.child(m.fallbacks, e.from_model, e.to_model).inc()

    def _denied(self, e: Denied) -> None:
        self.metrics.child(self.metrics.denials, e.reason).inc()

    def _charged(self, e: Charged) -> None:
        m = self.metrics
        m.child(m.spend, e.key_name or "", e.team or "", e.model).inc(
            e.cost_micros / MICROS_PER_USD
        )

    def _saved(self, e: Saved) -> None:
        m = self.metrics
        m.child(m.saved, e.key_name or "", e.team or "", e.model).inc(
            e.saved_micros / MICROS_PER_USD
        )

    def _circuit(self, e: CircuitChanged) -> None:
        self.metrics.child(self.metrics.circuit_state, e.model).set(e.state)

    def _backend(self, e: BackendCalled) -> None:
        m = self.metrics
        m.child(m.backend_seconds, e.backend, e.operation).observe(e.seconds)
        if not e.ok:
            m.child(m.backend_errors, e.backend).inc()


class LogHook(_Dispatching):
    """Events -> structlog lines: one per request (`http.request_completed`, image routes
    only), one per upstream call, and a warning or error for what an operator must see.

    `sample_hits` below 1.0 keeps that share of the request lines of answered hits (0.1:
    the 1st, 11th, 21st...; 0: none), each kept line saying `sample_rate`; every other
    line (misses, errors, upstream calls) is always written."""

    def __init__(self, logger: Any = None, *, sample_hits: float = 1.0) -> None:
        if not 0.0 <= sample_hits <= 1.0:
            raise ValueError(f"sample_hits must be 0.0-1.0, not {sample_hits}")
        self.log = logger if logger is not None else structlog.get_logger("imagegate")
        self._lines = RequestLines(self.log, "http.request_completed")
        self._sample = sample_hits
        # The first hit is written, then one in 1/rate; at 0 none is.
        self._credit = 1.0 - sample_hits if sample_hits else 0.0
        self._on: dict[type[Any], Callable[[Any], None]] = {
            RequestCompleted: self._request,
            ProviderCalled: self._provider,
            OverQuoted: self._over_quote,
            ReservationOrphaned: self._orphaned,
            StoreFailed: self._store_failed,
            BackendFailed: self._backend_failed,
            ErrorAnswered: self._error,
            RequestFailed: self._request_failed,
            ClientDisconnected: self._client_left,
            ClientTimedOut: self._timed_out,
            ExperimentCreated: self._experiment_created,
            ExperimentImageRestored: self._image_restored,
        }

    def _request(self, e: RequestCompleted) -> None:
        if not e.route.startswith("/v1/images"):
            return
        sampled = self._sample < 1.0 and e.cache == "hit" and e.status < 400
        if sampled:
            self._credit += self._sample
            if self._credit < 0.999_999:  # not 1.0: ten additions of 0.1 come to 0.99...9
                return
            self._credit -= 1.0
        self._lines.write(
            e.method, e.route, e.status, e.cache, round(e.seconds * 1000, 2), e.fields,
            e.request_id, self._sample if sampled else None,
        )  # fmt: skip

    def _provider(self, e: ProviderCalled) -> None:
        if e.outcome == "ok":
            self.log.info(
                "provider.called",
                provider=e.provider,
                model=e.model,
                attempt=e.attempt,
                images=e.images,
                calls=e.calls,
                cost_micros=e.cost_micros,
            )
        else:
            self.log.warning(
                "provider.call_failed",
                provider=e.provider,
                model=e.model,
                attempt=e.attempt,
                code=e.outcome,
                error=e.error,
            )

    def _over_quote(self, e: OverQuoted) -> None:
        self.log.warning(
            "budget.over_quote",
            provider=e.provider,
            model=e.model,
            quote_usd=format_usd(e.quote_micros),
            reported_usd=format_usd(e.reported_micros),
            over_quote_usd=format_usd(max(0, e.reported_micros - e.quote_micros)),
        )

    def _orphaned(self, e: ReservationOrphaned) -> None:
        self.log.warning(
            "budget.reservation_orphaned",
            key=e.key_name,
            model=e.model,
            provider=e.provider,
            charged_usd=format_usd(e.cost_micros),
            request_id=e.request_id,
        )

    def _store_failed(self, e: StoreFailed) -> None:
        self.log.error("cache.store_failed", key=e.request_key[:12], model=e.model, error=e.error)

    def _backend_failed(self, e: BackendFailed) -> None:
        if e.exception is None:
            self.log.error(f"{e.what}_failed", error=e.error)
        else:
            self.log.error(f"{e.what}_failed", error=e.error, exc_info=e.exception)

    def _error(self, e: ErrorAnswered) -> None:
        if e.status >= 500:  # a client's mistakes are in the request line, not a warning
            self.log.warning("http.error", status=e.status, code=e.code, error=e.error)

    def _request_failed(self, e: RequestFailed) -> None:
        self.log.error("http.request_failed", path=e.path, exc_info=e.exception)

    def _client_left(self, e: ClientDisconnected) -> None:
        self.log.info("http.client_disconnected", path=e.path, detail=e.detail)

    def _timed_out(self, e: ClientTimedOut) -> None:
        if e.phase == "header":
            self.log.info("http.header_timeout", seconds=e.seconds)
        else:
            self.log.info("http.body_timeout", seconds=e.seconds, received=e.received)

    def _experiment_created(self, e: ExperimentCreated) -> None:
        self.log.info("ab.experiment_created", experiment=e.experiment, variants=e.variants)

    def _image_restored(self, e: ExperimentImageRestored) -> None:
        self.log.warning("ab.image_restored", image=e.image[:12], variant=e.variant)
