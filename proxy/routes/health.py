"""GET /v1/models, /healthz, /readyz, /metrics.

Once API keys exist, `/v1/models` needs one (as OpenAI's own does) and `/metrics` needs
`[server] metrics_key` or the admin key as a Bearer token: key names, teams and spend are
in it. While the gateway is open (no keys) both are open, unless a metrics key is set.
`/healthz` and `/readyz` are always open (probes send no credentials).
"""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from policies.errors import AuthenticationFailed
from proxy.keys import BLOBS, CATALOG, ENTRIES, GATE, METRICS, SETTINGS

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    authorization = request.headers.get("Authorization")
    gate = request.app[GATE]
    if not gate.is_admin(authorization):
        await gate.authenticate(authorization)  # 401 without a valid key, once keys exist
    catalog = request.app[CATALOG]
    data: list[dict[str, object]] = []
    for spec in catalog.models.values():
        data.append(
            {
                "id": spec.name,
                "object": "model",
                "created": 0,
                "owned_by": spec.owned_by,
                "provider": spec.provider,
                "family": spec.family,
                "description": spec.description,
                "retired": spec.retired,
                "successor": spec.successor,
                "available": spec.available,
                "unavailable_reason": spec.unavailable_reason or None,
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
                "created": 0,
                "owned_by": spec.owned_by,
                "alias_of": target,
                "family": spec.family,
            }
        )
    return web.json_response({"object": "list", "data": data})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    problems: dict[str, str] = {}
    for name, store in (("entries", request.app[ENTRIES]), ("blobs", request.app[BLOBS])):
        try:
            await asyncio.to_thread(store.ping)
        except Exception as exc:  # any failure means not ready; the reason is reported
            problems[name] = type(exc).__name__
    if problems:
        return web.json_response({"status": "unavailable", "stores": problems}, status=503)
    return web.json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    await _may_scrape(request)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _may_scrape(request: web.Request) -> None:
    gate = request.app[GATE]
    metrics_key = request.app[SETTINGS].server.metrics_key
    authorization = request.headers.get("Authorization") or ""
    scheme, _, token = authorization.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    if metrics_key and hmac.compare_digest(token.encode(), metrics_key.reveal().encode()):
        return
    if gate.is_admin(authorization):
        return
    if not metrics_key and not await gate.keys_exist():
        return
    raise AuthenticationFailed(
        "/metrics needs 'Authorization: Bearer <[server] metrics_key>' (or the admin key) "
        "once API keys exist"
        + ("." if metrics_key else "; set [server] metrics_key for Prometheus to send.")
    )
