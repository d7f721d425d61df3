"""The gateway's parts, built from settings and a `Stores`: the provider registry, the
router, and the driver (`ImageService`) with its authentication, admission and accounts.
`create_app` (proxy.app) mounts them; the driver's unit tests build them the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from policies.admission import PromptPolicy
from policies.catalog import Catalog
from policies.ledger_models import KeyRecord
from policies.ratelimit import Rate
from proxy.accounts import Accounts
from proxy.admission import Admission
from proxy.authentication import Authenticator
from proxy.config import Settings
from proxy.generation import Generator
from proxy.hot import HotAnswers
from proxy.misses import Misses
from proxy.observability.events import Events
from proxy.ports import Provider
from proxy.providers.placeholder import PlaceholderProvider
from proxy.providers.registry import ProviderRegistry
from proxy.router import Router
from proxy.service import ImageService
from proxy.stores.build import Stores
from proxy.upstream_limits import UpstreamLimiter

__all__ = ["build_registry", "build_service", "config_keys"]


def build_registry(settings: Settings, providers: Mapping[str, Provider]) -> ProviderRegistry:
    """The placeholder answers when enabled, or when no real provider has credentials."""
    real = {name: p for name, p in providers.items() if name != "placeholder"}
    configured = settings.providers.get("placeholder")
    enabled = configured.enabled if configured is not None else None
    if enabled is None:
        enabled = not any(p.has_credentials() for p in real.values())
    placeholder = providers.get("placeholder") or PlaceholderProvider()
    return ProviderRegistry(real, placeholder if enabled else None)


def build_service(
    settings: Settings,
    catalog: Catalog,
    stores: Stores,
    registry: ProviderRegistry,
    events: Events,
    clock: Callable[[], float],
) -> ImageService:
    """The driver and everything it calls, over `stores` (ports only)."""
    router = _router(settings, catalog, registry, events, clock)
    cost = settings.cost
    auth = Authenticator(
        stores.keys, events, clock, cost.admin_key, settings.cache.share_across_teams
    )
    admission = Admission(stores.limits, PromptPolicy.of(cost.policy.deny_patterns), clock)
    accounts = Accounts(stores.ledger, cost, events, clock, owner=stores.owner)
    generator = Generator(
        router, events, max_attempts=settings.routing.max_attempts,
        limiter=_upstream_limits(settings),
    )  # fmt: skip
    ttl = settings.cache.ttl_seconds
    misses = Misses(catalog, stores, router, generator, admission, accounts, events, clock, ttl)
    return ImageService(
        catalog, stores, auth, admission, accounts, misses, events, clock,
        hot=HotAnswers(memo_bytes(settings)), ttl_seconds=ttl,
    )  # fmt: skip


def memo_bytes(settings: Settings) -> int:
    """`[cache] memory_mb` per worker: a quarter for blob bytes (`GET /images/...`, and in
    shared mode a quarter for the S3 blobs' base64, `proxy.stores.shared`), the rest for the
    memo of rendered answers. Embedded blobs keep their base64 on disk beside them."""
    memory = settings.cache.memory_mb * 1024 * 1024
    return memory // 2 if settings.storage.backend == "shared" else memory * 3 // 4


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
    events: Events,
    clock: Callable[[], float],
) -> Router:
    routing = settings.routing
    return Router(
        catalog=catalog,
        registry=registry,
        events=events,
        clock=clock,
        breaker=routing.breaker,
        substitute=routing.substitute,
        commercial_only=routing.commercial_only or settings.cost.policy.commercial_only,
        safety=settings.cost.policy.safety,
    )


def config_keys(settings: Settings, now: float) -> list[tuple[KeyRecord, str]]:
    """The [[keys]] of the config, as (record, secret)."""
    return [
        (
            KeyRecord(
                name=key.name,
                team=key.team,
                created=now,
                budget_micros=key.budget_micros,
                budget_window=key.budget_window,
                requests_per_minute=key.requests_per_minute,
                images_per_minute=key.images_per_minute,
                models=key.models,
                source="config",
            ),
            key.secret,
        )
        for key in settings.cost.keys
    ]
