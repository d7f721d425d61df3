"""create_app(settings): the aiohttp application with its stores, providers and service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiohttp import web

from policies.catalog import Catalog
from proxy.app_keys import (
    ACCOUNTS,
    ADMISSION,
    AUTH,
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
from proxy.assembly import build_registry, build_service, config_keys
from proxy.config import Settings
from proxy.memory import BytesLRU
from proxy.middlewares import add_request_id, request_middleware
from proxy.observability.events import BackendFailed, Events
from proxy.observability.hooks import LogHook, MetricsHook
from proxy.observability.ledger_metrics import LedgerCollector
from proxy.observability.metrics import Metrics, watch_loop_lag
from proxy.ports import Provider
from proxy.providers.factory import build_providers
from proxy.providers.registry import ProviderRegistry
from proxy.reservation_sweeper import ReservationSweeper
from proxy.routes import admin, blobs, dashboard, health, images, openapi
from proxy.routes.ab import setup_ab
from proxy.service import ImageService
from proxy.stores.build import Stores, build_stores

__all__ = ["create_app"]


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
    metrics = Metrics()
    events = Events((MetricsHook(metrics), LogHook(sample_hits=settings.logging.sample_hits)))
    app = web.Application(
        middlewares=[request_middleware(events)],
        client_max_size=settings.server.max_body_mb * 1024 * 1024,
    )
    app.on_response_prepare.append(add_request_id)
    catalog = catalog or settings.catalog
    stores = stores or build_stores(settings)
    if stores.watch is not None:  # shared mode: every backend call timed and counted
        stores.watch.attach(events)
    registry = build_registry(
        settings, build_providers(settings) if providers is None else providers
    )
    service = build_service(settings, catalog, stores, registry, events, clock)
    ledger_metrics = LedgerCollector(stores, settings.cost, clock)
    metrics.registry.register(ledger_metrics)
    memory = settings.cache.memory_mb * 1024 * 1024  # per worker: see proxy.assembly.memo_bytes
    app[SETTINGS] = settings
    app[CATALOG] = catalog
    app[METRICS] = metrics
    app[EVENTS] = events
    app[STORES] = stores
    app[SERVICE] = service
    app[AUTH] = service.auth
    app[ADMISSION] = service.admission
    app[ACCOUNTS] = service.accounts
    app[LEDGER_METRICS] = ledger_metrics
    app[HOT] = service.hot
    app[BLOB_MEMORY] = BytesLRU(memory // 4)
    for table in (images.routes, blobs.routes, health.routes, admin.routes, dashboard.routes):
        app.router.add_routes(table)
    app.router.add_routes(openapi.routes)
    setup_ab(app)
    app[SWEEPER] = ReservationSweeper(
        stores.ledger, stores.holds, service.router, clock, service.accounts.owner, events,
        interval=stores.sweep_seconds, lease=stores.lease_seconds,
    )  # fmt: skip
    app.cleanup_ctx.append(_lifetime(service, registry))
    lag_every = settings.server.loop_lag_interval_seconds
    app.cleanup_ctx.append(watch_loop_lag(metrics.loop_lag, lag_every))
    return app


def _lifetime(
    service: ImageService, registry: ProviderRegistry
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        auth, accounts, events = app[AUTH], app[ACCOUNTS], app[EVENTS]
        await app[STORES].start()
        await auth.sync_config(config_keys(app[SETTINGS], auth.clock()))
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
        try:  # rows a shared ledger could not take (PostgreSQL down) are lost: said so
            await accounts.flush_hits()
        except Exception as exc:
            events.emit(BackendFailed("ledger.flush", repr(exc)))
        await registry.aclose()
        await app[STORES].aclose()

    return lifetime
