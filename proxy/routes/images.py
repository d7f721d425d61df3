"""POST /v1/images/generations | edits | variations."""

from __future__ import annotations

import structlog
from aiohttp import web

from policies.budget import format_usd
from policies.cache import CacheOutcome, fresh_until, parse_cache_control
from policies.errors import InvalidRequest
from policies.models import ParsedRequest
from policies.normalize import parse_edit, parse_generation, parse_variation
from policies.uploads import form_rules
from proxy.access import Caller
from proxy.app_keys import (
    B64,
    CACHE_OUTCOME,
    CATALOG,
    GATE,
    HOT,
    LOG_FIELDS,
    REQUEST_ID,
    SERVICE,
    SETTINGS,
)
from proxy.forms import read_form
from proxy.hot import HotAnswer, HotKey
from proxy.image_refs import read_json_edit, read_json_edit_body
from proxy.routes.quote import DRY_RUN, dry_run, wants_dry_run
from proxy.service import Served
from proxy.wire import GENERATION_BODY_MAX, images_body, read_body, read_json, sse_events

__all__ = ["routes"]

routes = web.RouteTableDef()
log = structlog.get_logger("imagegate.images")
_JSON = "application/json"


@routes.post("/v1/images/generations")
async def generations(request: web.Request) -> web.StreamResponse:
    gate = request.app[GATE]
    authorization = request.headers.get("Authorization")
    caller = gate.known_caller(authorization) or await gate.authenticate(authorization)
    hot = request.app[HOT]
    hot_key: HotKey | None = None
    # A request with Cache-Control asks for a lookup of its own (max-age, no-cache...).
    headers = request.headers
    # A dry run (X-Imagegate-Dry-Run, proxy/routes/quote.py) is never answered from memory.
    if (
        hot.enabled
        and "Cache-Control" not in headers
        and DRY_RUN not in headers
        and request.content_type == _JSON
    ):
        raw = await read_body(request)
        hot_key = (request.path, caller.scope, _base_url(request), raw)
        answer = hot.get(hot_key, request.app[SERVICE].clock())
        if answer is not None:
            return await _repeat(request, caller, answer)
    body = await read_json(
        request, max_bytes=GENERATION_BODY_MAX, usage="client.images.generate(prompt=...)"
    )
    settings = request.app[SETTINGS]
    parsed = parse_generation(body, request.app[CATALOG], default_model=settings.default_model)
    return await _respond(request, caller, parsed, {}, hot_key)


async def _repeat(request: web.Request, caller: Caller, answer: HotAnswer) -> web.Response:
    """A hit answered from memory. The prompt policy passed when the answer was kept."""
    gate = request.app[GATE]
    gate.check_model(caller, answer.requested_model)
    rate = await gate.take_request(caller)
    service = request.app[SERVICE]
    service.record_repeat(
        caller,
        request[REQUEST_ID],
        key=answer.request_key,
        model=answer.model,
        provider=answer.provider,
        images=answer.images,
        saved=answer.saved_micros,
    )
    request[CACHE_OUTCOME] = "HIT"
    request[LOG_FIELDS] = answer.log_fields
    headers = answer.headers
    if rate is not None:
        headers = {**headers, **rate.headers()}
    return web.Response(body=answer.body(int(service.clock())), headers=headers)


@routes.post("/v1/images/edits")
async def edits(request: web.Request) -> web.StreamResponse:
    caller = await request.app[GATE].authenticate(request.headers.get("Authorization"))
    settings = request.app[SETTINGS]
    catalog = request.app[CATALOG]
    json_body = request.content_type == _JSON
    if json_body:  # OpenAI's EditImageBodyJsonParam: images by image_url
        form = await read_json_edit(await read_json_edit_body(request), catalog, settings)
    else:
        rules = form_rules("edit", catalog)
        form = await read_form(request, rules, settings.server.max_body_mb * 1024 * 1024)
    parsed = parse_edit(
        form.fields,
        form.images,
        form.mask,
        catalog,
        default_model=settings.default_model,
        markup=form.markup,
        json_body=json_body,
    )
    return await _respond(request, caller, parsed, form.uploads)


@routes.post("/v1/images/variations")
async def variations(request: web.Request) -> web.StreamResponse:
    caller = await request.app[GATE].authenticate(request.headers.get("Authorization"))
    settings = request.app[SETTINGS]
    rules = form_rules("variation", request.app[CATALOG])
    form = await read_form(request, rules, settings.server.max_body_mb * 1024 * 1024)
    if form.mask is not None or len(form.images) > 1:
        raise InvalidRequest("Variations take exactly one 'image' and no mask.", param="image")
    image = form.images[0] if form.images else None
    parsed = parse_variation(form.fields, image, request.app[CATALOG])
    return await _respond(request, caller, parsed, form.uploads)


async def _respond(
    request: web.Request,
    caller: Caller,
    parsed: ParsedRequest,
    uploads: dict[str, bytes],
    hot_key: HotKey | None = None,
) -> web.StreamResponse:
    gate = request.app[GATE]
    gate.check_model(caller, parsed.request.model)
    gate.check_prompt(parsed.request.prompt)
    if wants_dry_run(request.headers):  # a quote: no provider call, reservation or ledger row
        return await dry_run(request, caller, parsed)
    directives = parse_cache_control(request.headers.get("Cache-Control"))
    rate = await gate.take_request(caller)  # hits count against the request limit too
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
    request[LOG_FIELDS] = dict(
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
    if hot_key is not None and served.outcome is CacheOutcome.HIT:
        _keep(request, hot_key, served, parsed, body, created)
    return web.Response(body=body, content_type="application/json", headers=headers)


def _keep(
    request: web.Request,
    hot_key: HotKey,
    served: Served,
    parsed: ParsedRequest,
    body: bytes,
    created: int,
) -> None:
    """Keep a hit's rendered answer for the next identical request (proxy/hot.py)."""
    head = b'{"created":%d' % created
    assert body.startswith(head)
    entries = [image.entry for image in served.images]
    ttl = request.app[SETTINGS].cache.ttl_seconds
    answer = HotAnswer(
        request_key=served.key,
        requested_model=parsed.request.model,
        model=served.model,
        provider=served.provider,
        images=len(entries),
        saved_micros=sum(entry.cost_micros for entry in entries),
        expires=fresh_until(entries, ttl),
        headers=_headers(served) | {"Content-Type": "application/json"},
        tail=body[len(head) :],
    )
    request.app[HOT].put(hot_key, answer)


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
