"""create_app(settings): the aiohttp application with its stores, providers and service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from aiohttp import web

from policies.catalog import Catalog
from policies.ratelimit import Rate
from proxy.access import Gatekeeper, sync_config_keys
from proxy.app_keys import (
    B64,
    BLOB_MEMORY,
    BLOBS,
    CATALOG,
    ENTRIES,
    GATE,
    HOT,
    METRICS,
    SERVICE,
    SETTINGS,
    SWEEPER,
)
from proxy.config import Settings
from proxy.generation import Generator
from proxy.hot import HotAnswers
from proxy.memory import B64Cache, BytesLRU
from proxy.middlewares import request_middleware
from proxy.observability.ledger_metrics import LedgerCollector
from proxy.observability.metrics import Metrics, StoreCollector, watch_loop_lag
from proxy.ports import BlobStore, EntryStore, Provider
from proxy.process_locks import ProcessLocks
from proxy.providers.factory import build_providers
from proxy.providers.placeholder import PlaceholderProvider
from proxy.providers.registry import ProviderRegistry
from proxy.reservation_sweeper import ReservationSweeper
from proxy.router import Router
from proxy.routes import admin, blobs, dashboard, health, images, openapi
from proxy.routes.ab import setup_ab
from proxy.service import ImageService
from proxy.stores.disk import DiskBlobStore, DiskEntryStore
from proxy.stores.ledger import SqliteLedger
from proxy.upstream_limits import UpstreamLimiter

__all__ = ["build_registry", "create_app"]

log = structlog.get_logger("imagegate.app")


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
    entries: EntryStore | None = None,
    blobs_store: BlobStore | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[request_middleware],
        client_max_size=settings.server.max_body_mb * 1024 * 1024,
    )
    catalog = catalog or settings.catalog
    metrics = Metrics()
    data_dir = settings.data_dir
    entry_store = entries or DiskEntryStore(data_dir / "entries")
    blob_store = blobs_store or DiskBlobStore(
        data_dir / "blobs", max_bytes=settings.cache.max_bytes
    )
    metrics.registry.register(StoreCollector(blob_store, entry_store))
    registry = build_registry(
        settings, build_providers(settings) if providers is None else providers
    )
    router = _router(settings, catalog, registry, metrics, clock)
    gate = Gatekeeper(
        ledger=SqliteLedger(data_dir / "ledger.sqlite3"),
        cost=settings.cost,
        metrics=metrics,
        clock=clock,
        share_across_teams=settings.cache.share_across_teams,
    )
    metrics.registry.register(LedgerCollector(gate))
    service = ImageService(
        catalog=catalog,
        entries=entry_store,
        blobs=blob_store,
        router=router,
        generator=Generator(
            router,
            metrics,
            max_attempts=settings.routing.max_attempts,
            limiter=_upstream_limits(settings),
        ),
        gate=gate,
        locks=ProcessLocks(data_dir / "flights.lock"),
        metrics=metrics,
        clock=clock,
        ttl_seconds=settings.cache.ttl_seconds,
    )
    app[SETTINGS] = settings
    app[CATALOG] = catalog
    app[METRICS] = metrics
    app[ENTRIES] = entry_store
    app[BLOBS] = blob_store
    app[SERVICE] = service
    app[GATE] = gate
    memory = settings.cache.memory_mb * 1024 * 1024  # per worker: half, a quarter, a quarter
    app[HOT] = HotAnswers(memory // 2)
    app[B64] = B64Cache(memory // 4)
    app[BLOB_MEMORY] = BytesLRU(memory // 4)
    for table in (images.routes, blobs.routes, health.routes, admin.routes, dashboard.routes):
        app.router.add_routes(table)
    app.router.add_routes(openapi.routes)
    setup_ab(app, data_dir)
    app[SWEEPER] = ReservationSweeper(gate, router)
    app.cleanup_ctx.append(_lifetime(service, registry, gate, (entry_store, blob_store)))
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
        breaker=routing.breaker,
        substitute=routing.substitute,
        commercial_only=routing.commercial_only or settings.cost.policy.commercial_only,
        safety=settings.cost.policy.safety,
    )


def _lifetime(
    service: ImageService, registry: ProviderRegistry, gate: Gatekeeper, stores: tuple[object, ...]
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await sync_config_keys(gate)
        sweeper = app[SWEEPER]
        await sweeper.sweep()  # a restart settles what the dead process left reserved
        tasks = [asyncio.create_task(gate.run_flusher()), asyncio.create_task(sweeper.run())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.aclose()  # calls cut off in flight are charged as orphans
        try:  # a sibling worker that died: its calls go on the books before this one stops
            await sweeper.sweep()
        except Exception:
            log.exception("ledger.sweep_failed")
        await gate.flush_hits()
        await registry.aclose()
        gate.hit_rows.close()
        gate.ledger.close()
        gate.buckets.close()
        service.locks.close()
        for store in stores:
            close = getattr(store, "close", None)
            if close is not None:
                close()

    return lifetime
