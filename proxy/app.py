"""create_app(settings): the aiohttp application with its stores, providers and service."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping

import structlog
from aiohttp import web

from policies.catalog import Catalog
from policies.circuit import Breaker
from proxy.config import Settings
from proxy.generation import Generator
from proxy.keys import BLOBS, CATALOG, ENTRIES, METRICS, SERVICE, SETTINGS
from proxy.middlewares import error_middleware, request_middleware
from proxy.observability.metrics import Metrics, StoreCollector
from proxy.ports import BlobStore, EntryStore, Provider
from proxy.providers.factory import build_providers
from proxy.providers.placeholder import PlaceholderProvider
from proxy.providers.registry import ProviderRegistry
from proxy.router import Router
from proxy.routes import blobs, health, images
from proxy.service import ImageService
from proxy.stores.disk import DiskBlobStore, DiskEntryStore

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
        middlewares=[request_middleware, error_middleware],
        client_max_size=settings.server.max_body_mb * 1024 * 1024,
    )
    catalog = catalog or settings.catalog
    metrics = Metrics()
    data_dir = settings.data_dir
    entry_store = entries or DiskEntryStore(data_dir / "entries")
    blob_store = blobs_store or DiskBlobStore(
        data_dir / "blobs", max_bytes=settings.cache.max_bytes
    )
    made = build_providers(settings) if providers is None else providers
    registry = build_registry(settings, made)
    metrics.registry.register(StoreCollector(blob_store, entry_store))
    routing = settings.routing
    router = Router(
        catalog=catalog,
        registry=registry,
        metrics=metrics,
        clock=clock,
        breaker=Breaker(
            threshold=routing.breaker_failures, cooldown=routing.breaker_cooldown_seconds
        ),
        substitute=routing.substitute,
        commercial_only=routing.commercial_only,
    )
    service = ImageService(
        catalog=catalog,
        entries=entry_store,
        blobs=blob_store,
        router=router,
        generator=Generator(router, metrics, max_attempts=routing.max_attempts),
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
    app.router.add_routes(images.routes)
    app.router.add_routes(blobs.routes)
    app.router.add_routes(health.routes)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        yield
        await service.aclose()
        await registry.aclose()
        for store in (entry_store, blob_store):
            close = getattr(store, "close", None)
            if close is not None:
                close()

    app.cleanup_ctx.append(lifetime)
    return app
