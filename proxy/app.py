"""create_app(settings): the aiohttp application with its stores, providers and service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiohttp import web

from policies.admission import PromptPolicy
from policies.catalog import Catalog
from policies.circuit import Breaker
from policies.ledger_models import KeyRecord
from policies.ratelimit import Rate
from proxy.accounts import Accounts
from proxy.admission import Admission
from proxy.app_keys import (
    ACCOUNTS,
    ADMISSION,
    AUTH,
    B64,
    BLOB_MEMORY,
    CATALOG,
    EVENTS,
    HOT,
    LEDGER_METRICS,
    METRICS,
    SERVICE,
    SETTINGS,
    STORES,
    SWEEPER,
)
from proxy.authentication import Authenticator
from proxy.config import Settings
from proxy.generation import Generator
from proxy.hot import HotAnswers
from proxy.memory import B64Cache, BytesLRU
from proxy.middlewares import request_middleware
from proxy.misses import Misses
from proxy.observability.events import BackendFailed, Events
from proxy.observability.hooks import LogHook, MetricsHook
from proxy.observability.ledger_metrics import LedgerCollector
from proxy.observability.metrics import Metrics, watch_loop_lag
from proxy.ports import Provider
from proxy.providers.factory import build_providers
from proxy.providers.placeholder import PlaceholderProvider
from proxy.providers.registry import ProviderRegistry
from proxy.reservation_sweeper import ReservationSweeper
from proxy.router import Router
from proxy.routes import admin, blobs, dashboard, health, images, openapi
from proxy.routes.ab import setup_ab
from proxy.service import ImageService
from proxy.stores.build import Stores, build_stores
from proxy.upstream_limits import UpstreamLimiter

__all__ = ["build_registry", "create_app"]


def build_registry(settings: Settings, providers: Mapping[str, Provider]) -> ProviderRegistry:
    """The placeholder answers when enabled, or when no real provider has credentials."""
    real = {name: p for name, p in providers.items() if name != "placeholder"}
    configured = settings.providers.get("placeholder")
    enabled = configured.enabled if configured is not None else None
    if enabled is None:
        enabled = not any(p.has_credentials() for p in real.values())
    placeholder = providers.get("placeholder") or PlaceholderProvider()
    return ProviderRegistry(real, placeholder if enabled else None)


def create_app(
    settings: Settings,
    *,
    providers: Mapping[str, Provider] | None = None,
    clock: Callable[[], float] = time.time,
    catalog: Catalog | None = None,
    stores: Stores | None = None,
) -> web.Application:
    """`stores`: every port (default: the embedded stores under `settings.data_dir`,
    `proxy.stores.build`); the app closes them when it stops."""
    app = web.Application(
        middlewares=[request_middleware],
        client_max_size=settings.server.max_body_mb * 1024 * 1024,
    )
    catalog = catalog or settings.catalog
    metrics = Metrics()
    events = Events((MetricsHook(metrics), LogHook()))
    stores = stores or build_stores(settings)
    registry = build_registry(
        settings, build_providers(settings) if providers is None else providers
    )
    router = _router(settings, catalog, registry, metrics, clock)
    cost = settings.cost
    auth = Authenticator(
        stores.keys, events, clock, cost.admin_key, settings.cache.share_across_teams
    )
    admission = Admission(stores.limits, PromptPolicy.of(cost.policy.deny_patterns), clock)
    accounts = Accounts(stores.ledger, cost, events, clock)
    ledger_metrics = LedgerCollector(stores, cost, clock)
    metrics.registry.register(ledger_metrics)
    generator = Generator(
        router, metrics, max_attempts=settings.routing.max_attempts,
        limiter=_upstream_limits(settings),
    )  # fmt: skip
    ttl = settings.cache.ttl_seconds
    misses = Misses(catalog, stores, router, generator, admission, accounts, events, clock, ttl)
    memory = settings.cache.memory_mb * 1024 * 1024  # per worker: half, a quarter, a quarter
    service = ImageService(
        catalog, stores, auth, admission, accounts, misses, events, clock,
        hot=HotAnswers(memory // 2), ttl_seconds=ttl,
    )  # fmt: skip
    app[SETTINGS] = settings
    app[CATALOG] = catalog
    app[METRICS] = metrics
    app[EVENTS] = events
    app[STORES] = stores
    app[SERVICE] = service
    app[AUTH] = auth
    app[ADMISSION] = admission
    app[ACCOUNTS] = accounts
    app[LEDGER_METRICS] = ledger_metrics
    app[HOT] = service.hot
    app[B64] = B64Cache(memory // 4)
    app[BLOB_MEMORY] = BytesLRU(memory // 4)
    for table in (images.routes, blobs.routes, health.routes, admin.routes, dashboard.routes):
        app.router.add_routes(table)
    app.router.add_routes(openapi.routes)
    setup_ab(app)
    app[SWEEPER] = ReservationSweeper(stores.ledger, stores.holds, router, clock, accounts.owner)
    app.cleanup_ctx.append(_lifetime(service, registry))
    lag_every = settings.server.loop_lag_interval_seconds
    app.cleanup_ctx.append(watch_loop_lag(metrics.loop_lag, lag_every))
    return app


def _upstream_limits(settings: Settings) -> UpstreamLimiter:
    rates = {
        name: Rate(conf.requests_per_minute)
        for name, conf in settings.providers.items()
        if conf.requests_per_minute
    }
    return UpstreamLimiter(rates)


def _router(
    settings: Settings,
    catalog: Catalog,
    registry: ProviderRegistry,
    metrics: Metrics,
    clock: Callable[[], float],
) -> Router:
    routing = settings.routing
    return Router(
        catalog=catalog,
        registry=registry,
        metrics=metrics,
        clock=clock,
        breaker=Breaker(
            threshold=routing.breaker_failures, cooldown=routing.breaker_cooldown_seconds
        ),
        substitute=routing.substitute,
        commercial_only=routing.commercial_only or settings.cost.policy.commercial_only,
        safety=settings.cost.policy.safety,
    )


def _config_keys(settings: Settings, now: float) -> list[tuple[KeyRecord, str]]:
    """The [[keys]] of the config, as (record, secret)."""
    return [
        (
            KeyRecord(
                name=key.name,
                team=key.team,
                created=now,
                budget_micros=key.budget_micros,
                budget_window=key.budget_window,  # type: ignore[arg-type]
                requests_per_minute=key.requests_per_minute,
                images_per_minute=key.images_per_minute,
                models=key.models,
                source="config",
            ),
            key.secret,
        )
        for key in settings.cost.keys
    ]


def _lifetime(
    service: ImageService, registry: ProviderRegistry
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        auth, accounts, events = app[AUTH], app[ACCOUNTS], app[EVENTS]
        await auth.sync_config(_config_keys(app[SETTINGS], auth.clock()))
        sweeper = app[SWEEPER]
        await sweeper.sweep()  # a restart settles what the dead process left reserved
        tasks = [asyncio.create_task(accounts.run_flusher()), asyncio.create_task(sweeper.run())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.aclose()  # calls cut off in flight are charged as orphans
        try:  # a sibling worker that died: its calls go on the books before this one stops
            await sweeper.sweep()
        except Exception as exc:
            events.emit(BackendFailed("ledger.sweep", repr(exc)))
        await accounts.flush_hits()
        await registry.aclose()
        await app[STORES].aclose()

    return lifetime
