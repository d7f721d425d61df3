"""GET /v1/models, /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.keys import BLOBS, CATALOG, ENTRIES, METRICS

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
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
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
