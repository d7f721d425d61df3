"""GET /v1/models, /healthz, /readyz, /metrics.

Once API keys exist, `/v1/models` needs one (as OpenAI's own does) and `/metrics` needs
`[server] metrics_key` or the admin key as a Bearer token: key names, teams and spend are
in it. While the gateway is open (no keys) both are open, unless a metrics key is set.
`/healthz` and `/readyz` are always open (probes send no credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from policies.catalog import Catalog, ModelSpec
from policies.errors import AuthenticationFailed
from proxy.app_keys import AUTH, CATALOG, LEDGER_METRICS, METRICS, SERVICE, SETTINGS, STORES
from proxy.providers.registry import ProviderRegistry
from proxy.stores.backend_errors import BackendUnavailable

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    """Every catalog model and alias. `available`: a request for it is served now (its
    provider has credentials, or the placeholder draws it offline: `served_by` says which;
    `provider_configured` whether its own provider has credentials); `created`: when this
    gateway started (it read its catalog then)."""
    authorization = request.headers.get("Authorization")
    auth = request.app[AUTH]
    if not auth.is_admin(authorization):
        await auth.authenticate(authorization)  # 401 without a valid key, once keys exist
    catalog = request.app[CATALOG]
    registry = request.app[SERVICE].router.registry
    created = int(auth.started)
    ready = registry.ready()
    data: list[dict[str, object]] = []
    for spec in catalog.models.values():
        served_by, reason = _served_by(spec, catalog, registry)
        data.append(
            {
                "id": spec.name,
                "object": "model",
                "created": created,
                "owned_by": spec.owned_by,
                "provider": spec.provider,
                "family": spec.family,
                "description": spec.description,
                "retired": spec.retired,
                "successor": spec.successor,
                "available": served_by is not None,
                "served_by": served_by,
                "provider_configured": spec.virtual or spec.provider in ready,
                "unavailable_reason": reason,
                "virtual": spec.virtual,
                "needs": list(spec.needs),
                "strengths": list(spec.strengths),
                "licence": spec.licence,
                "images_per_call": spec.max_per_call,
                "edits": spec.edits,
                "masks": spec.masks,
            }
        )
    for alias, target in catalog.aliases.items():
        spec = catalog.models[target]
        data.append(
            {
                "id": alias,
                "object": "model",
                "created": created,
                "owned_by": spec.owned_by,
                "alias_of": target,
                "family": spec.family,
            }
        )
    return web.json_response({"object": "list", "data": data})


def _served_by(
    spec: ModelSpec, catalog: Catalog, registry: ProviderRegistry
) -> tuple[str | None, str | None]:
    """(who serves requests for it now, or None; why not)."""
    if not spec.available:
        return None, spec.unavailable_reason or "unavailable"
    if registry.placeholder_only:
        return "placeholder", None
    ready = registry.ready()
    if spec.virtual:
        pool = [s for s in catalog.models.values() if not s.virtual and not s.retired]
        fits = [s for s in pool if s.available and set(spec.needs) <= set(s.strengths)]
        if any(s.provider in ready for s in fits):
            return "router", None
        return None, "no model it routes to has a provider with credentials"
    if spec.retired and spec.successor is not None:
        return _served_by(catalog.models[spec.successor], catalog, registry)
    if spec.provider in ready:
        return spec.provider, None
    return None, f"provider '{spec.provider}' has no credentials ([providers.{spec.provider}])"


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """503 naming each store (embedded: entries, blobs) or shared backend (redis, postgres,
    s3) that does not answer a ping within `_PING_WITHIN` seconds; `/healthz` stays 200."""
    stores = request.app[STORES]
    pings = stores.backends or (("entries", stores.entries.ping), ("blobs", stores.blobs.ping))
    answers = await asyncio.gather(*(_ping(ping) for _, ping in pings))
    problems = {name: why for (name, _), why in zip(pings, answers, strict=True) if why}
    if problems:
        return web.json_response({"status": "unavailable", "stores": problems}, status=503)
    return web.json_response({"status": "ready"})


_PING_WITHIN = 3.0


async def _ping(ping: Callable[[], Awaitable[None]]) -> str:
    """'' when it answered, else why not (a shared backend's detail: never a password)."""
    try:
        await asyncio.wait_for(ping(), _PING_WITHIN)
    except BackendUnavailable as exc:
        return exc.detail
    except TimeoutError:
        return f"no answer within {_PING_WITHIN:g} s"
    except Exception as exc:  # any failure means not ready; the reason is reported
        return type(exc).__name__
    return ""


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    await _may_scrape(request)
    # The ledger and the stores are read through their ports first; the collectors then
    # read that snapshot and the worker processes' metric files, off the event loop.
    # Shared mode with a backend down: the last snapshot stands; the backend metrics say why.
    with contextlib.suppress(BackendUnavailable):
        await request.app[LEDGER_METRICS].refresh()
    body = await asyncio.to_thread(generate_latest, request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _may_scrape(request: web.Request) -> None:
    auth = request.app[AUTH]
    metrics_key = request.app[SETTINGS].server.metrics_key
    authorization = request.headers.get("Authorization") or ""
    scheme, _, token = authorization.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    if metrics_key and hmac.compare_digest(token.encode(), metrics_key.reveal().encode()):
        return
    if auth.is_admin(authorization):
        return
    if not metrics_key and not await auth.keys_exist():
        return
    raise AuthenticationFailed(
        "/metrics needs 'Authorization: Bearer <[server] metrics_key>' (or the admin key) "
        "once API keys exist"
        + ("." if metrics_key else "; set [server] metrics_key for Prometheus to send.")
    )
