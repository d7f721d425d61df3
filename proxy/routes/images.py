"""POST /v1/images/generations | edits | variations."""

from __future__ import annotations

import structlog
from aiohttp import web

from policies.budget import format_usd
from policies.cache import parse_cache_control
from policies.errors import InvalidRequest
from policies.models import ParsedRequest
from policies.normalize import parse_edit, parse_generation, parse_variation
from proxy.access import Caller
from proxy.keys import B64, CACHE_OUTCOME, CATALOG, GATE, REQUEST_ID, SERVICE, SETTINGS
from proxy.service import Served
from proxy.wire import images_body, read_form, read_json, sse_events

__all__ = ["routes"]

routes = web.RouteTableDef()
log = structlog.get_logger("imagegate.images")


@routes.post("/v1/images/generations")
async def generations(request: web.Request) -> web.StreamResponse:
    caller = await request.app[GATE].authenticate(request.headers.get("Authorization"))
    body = await read_json(request)
    settings = request.app[SETTINGS]
    parsed = parse_generation(body, request.app[CATALOG], default_model=settings.default_model)
    return await _respond(request, caller, parsed, {})


@routes.post("/v1/images/edits")
async def edits(request: web.Request) -> web.StreamResponse:
    caller = await request.app[GATE].authenticate(request.headers.get("Authorization"))
    settings = request.app[SETTINGS]
    form = await read_form(request, settings.server.max_body_mb * 1024 * 1024)
    parsed = parse_edit(
        form.fields,
        form.images,
        form.mask,
        request.app[CATALOG],
        default_model=settings.default_model,
        markup=form.markup,
    )
    return await _respond(request, caller, parsed, form.uploads)


@routes.post("/v1/images/variations")
async def variations(request: web.Request) -> web.StreamResponse:
    caller = await request.app[GATE].authenticate(request.headers.get("Authorization"))
    settings = request.app[SETTINGS]
    form = await read_form(request, settings.server.max_body_mb * 1024 * 1024)
    if form.mask is not None or len(form.images) > 1:
        raise InvalidRequest("Variations take exactly one 'image' and no mask.", param="image")
    image = form.images[0] if form.images else None
    parsed = parse_variation(form.fields, image, request.app[CATALOG])
    return await _respond(request, caller, parsed, form.uploads)


async def _respond(
    request: web.Request, caller: Caller, parsed: ParsedRequest, uploads: dict[str, bytes]
) -> web.StreamResponse:
    gate = request.app[GATE]
    gate.check_model(caller, parsed.request.model)
    gate.check_prompt(parsed.request.prompt)
    directives = parse_cache_control(request.headers.get("Cache-Control"))
    rate = gate.take_request(caller)  # hits count against the request limit too
    delivery = parsed.delivery
    url_mode = delivery.response_format == "url" and not delivery.stream
    served = await request.app[SERVICE].serve(
        parsed,
        uploads,
        directives,
        caller=caller,
        request_id=request[REQUEST_ID],
        need_bytes=not url_mode,
    )
    headers = _headers(served) | (rate.headers() if rate else {})
    request[CACHE_OUTCOME] = served.outcome.value
    # Carried by the one log line per request (http.request_completed), never a prompt.
    structlog.contextvars.bind_contextvars(
        key=served.key[:12],
        model=served.model,
        provider=served.provider,
        images=len(served.images),
        cost_usd=headers["X-Imagegate-Cost-USD"],
    )
    created = int(request.app[SERVICE].clock())
    if delivery.stream:
        return await _stream(request, served, parsed, headers, created)
    catalog = request.app[CATALOG]
    family = catalog.family_of(catalog.resolve(parsed.request.model))
    base = _base_url(request) if url_mode else None
    body = images_body(
        served, parsed.request, family, base_url=base, created=created, b64=request.app[B64]
    )
    return web.Response(body=body, content_type="application/json", headers=headers)


def _headers(served: Served) -> dict[str, str]:
    return {
        "X-Cache": served.outcome.value,
        "X-Cache-Key": served.key,
        "X-Imagegate-Model": served.model,
        "X-Imagegate-Provider": served.provider,
        "X-Imagegate-Cost-USD": format_usd(served.cost_micros),
    }


def _base_url(request: web.Request) -> str:
    configured = request.app[SETTINGS].server.public_base_url
    return configured or f"{request.scheme}://{request.host}"


async def _stream(
    request: web.Request,
    served: Served,
    parsed: ParsedRequest,
    headers: dict[str, str],
    created: int,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for event in sse_events(served, parsed.request, created=created):
        await response.write(event)
    await response.write_eof()
    return response
