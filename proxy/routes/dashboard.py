"""GET /dashboard: spend and savings over time, hit ratio, budgets, provider health, gallery.

Server-rendered HTML with inline SVG and a few lines of script (no CDN: it works offline).
Needs the admin key (HTTP Basic password or Bearer), or nothing when the gateway is open.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from aiohttp import web

from policies.errors import AuthenticationFailed
from proxy.app_keys import SERVICE, STORES
from proxy.observability.dashboard_html import render_dashboard
from proxy.routes.admin import require_admin, spend_report
from proxy.wire import blob_url

__all__ = ["routes"]

routes = web.RouteTableDef()
_DAYS = 30


@routes.get("/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    basic = _basic_password(request.headers.get("Authorization"))
    if basic is not None:
        request = request.clone(headers={**request.headers, "Authorization": f"Bearer {basic}"})
    try:
        auth = await require_admin(request)
    except AuthenticationFailed:
        return web.Response(
            status=401,
            text="The dashboard needs the admin key as password.",
            headers={"WWW-Authenticate": 'Basic realm="imagegate"'},
        )
    now, app = auth.clock(), request.app
    reports = {by: await spend_report(app, by, None) for by in ("key", "team", "model")}
    days = await spend_report(app, "day", str(now - _DAYS * 86400))
    gallery = await _gallery(request, 24)
    reservations = (await app[STORES].reports.totals())["open_reservations"]
    health = request.app[SERVICE].router.health()
    html = render_dashboard(
        now=now,
        reports=reports,
        days=days["rows"],
        health=health,
        gallery=gallery,
        totals=days,
        generated_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)),
        reservations=reservations,
    )
    return web.Response(
        text=html,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; "
            "img-src 'self' data:; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'",
        },
    )


async def _gallery(request: web.Request, limit: int) -> list[dict[str, Any]]:
    stores = request.app[STORES]
    seen: set[str] = set()
    items: list[dict[str, Any]] = []
    for row in await stores.reports.rows(limit=limit * 6):
        if row.request_key in seen:
            continue
        seen.add(row.request_key)
        entry = await stores.entries.get(row.request_key, 0)
        if entry is None:
            continue
        items.append(
            {
                "url": blob_url("", entry.blob, entry.format),
                "prompt": entry.prompt or "",
                "model": row.model,
                "provider": row.provider,
                "cache": row.cache,
                "cost_micros": entry.cost_micros,
                "ts": row.ts,
            }
        )
        if len(items) == limit:
            break
    return items


def _basic_password(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]
