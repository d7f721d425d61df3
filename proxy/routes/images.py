"""POST /v1/images/generations | edits | variations: parse, call the driver, render.

Each route reads only what it needs to name its parse step; the driver (`proxy.service`)
authenticates, admits, looks up, generates and records, and answers one of three values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import assert_never

from aiohttp import web

from policies.budget import format_usd
from policies.errors import InvalidRequest
from policies.models import ParsedRequest
from policies.normalize import parse_edit, parse_generation, parse_variation
from policies.uploads import form_rules
from proxy.app_keys import CACHE_OUTCOME, CATALOG, LOG_FIELDS, REQUEST_ID, SERVICE, SETTINGS
from proxy.forms import read_form
from proxy.image_refs import read_json_edit, read_json_edit_body
from proxy.routes.quote import DRY_RUN, dry_run, wants_dry_run
from proxy.service import Answered, Ask, Memo, Parse, Quoting, Repeated, Served
from proxy.wire import GENERATION_BODY_MAX, images_body, read_body, read_json, sse_events

__all__ = ["routes"]

routes = web.RouteTableDef()
_JSON = "application/json"
_Parsed = tuple[ParsedRequest, Mapping[str, bytes]]


@routes.post("/v1/images/generations")
async def generations(request: web.Request) -> web.StreamResponse:
    async def parse() -> _Parsed:
        body = await read_json(
            request, max_bytes=GENERATION_BODY_MAX, usage="client.images.generate(prompt=...)"
        )
        default = request.app[SETTINGS].default_model
        return parse_generation(body, request.app[CATALOG], default_model=default), {}

    headers = request.headers
    # A request with Cache-Control asks for a lookup of its own (max-age, no-cache...), and a
    # dry run is never answered from memory: only a plain JSON body may be.
    plain = "Cache-Control" not in headers and DRY_RUN not in headers
    memo = (request.path, _base_url(request), lambda: read_body(request))
    return await _respond(request, parse, memo if plain and request.content_type == _JSON else None)


@routes.post("/v1/images/edits")
async def edits(request: web.Request) -> web.StreamResponse:
    async def parse() -> _Parsed:
        settings, catalog = request.app[SETTINGS], request.app[CATALOG]
        json_body = request.content_type == _JSON
        if json_body:  # OpenAI's EditImageBodyJsonParam: images by image_url
            form = await read_json_edit(await read_json_edit_body(request), catalog, settings)
        else:
            limit = settings.server.max_body_mb * 1024 * 1024
            form = await read_form(request, form_rules("edit", catalog), limit)
        parsed = parse_edit(
            form.fields, form.images, form.mask, catalog, default_model=settings.default_model,
            markup=form.markup, json_body=json_body,
        )  # fmt: skip
        return parsed, form.uploads

    return await _respond(request, parse)


@routes.post("/v1/images/variations")
async def variations(request: web.Request) -> web.StreamResponse:
    async def parse() -> _Parsed:
        catalog, limit = request.app[CATALOG], request.app[SETTINGS].server.max_body_mb << 20
        form = await read_form(request, form_rules("variation", catalog), limit)
        if form.mask is not None or len(form.images) > 1:
            raise InvalidRequest("Variations take exactly one 'image' and no mask.", param="image")
        image = form.images[0] if form.images else None
        return parse_variation(form.fields, image, catalog), form.uploads

    return await _respond(request, parse)


async def _respond(request: web.Request, parse: Parse, memo: Memo = None) -> web.StreamResponse:
    headers = request.headers
    ask = Ask(
        headers.get("Authorization"), parse, headers.get("Cache-Control"),
        lambda: wants_dry_run(headers), request[REQUEST_ID], memo,
    )  # fmt: skip
    service = request.app[SERVICE]
    match await service.handle(ask):
        case Repeated(answer, rate):
            request[CACHE_OUTCOME] = "HIT"
            request[LOG_FIELDS] = answer.log_fields
            response = web.Response(body=answer.body(int(service.clock())), headers=answer.headers)
            if rate is not None:
                response.headers.update(rate.headers())
            return response
        case Quoting(caller, parsed):
            return await dry_run(request, caller, parsed)
        case Answered() as answered:
            return await _render(request, answered)
        case unknown:
            assert_never(unknown)


async def _render(request: web.Request, answered: Answered) -> web.StreamResponse:
    served, parsed = answered.served, answered.parsed
    own = _headers(served)  # what a memo answer keeps; the rate headers are per request
    headers = own | (answered.rate.headers() if answered.rate else {})
    request[CACHE_OUTCOME] = served.outcome.value
    # Carried by the one log line per request (http.request_completed), never a prompt.
    request[LOG_FIELDS] = dict(
        key=served.key[:12], model=served.model, provider=served.provider,
        images=len(served.images), cost_usd=headers["X-Imagegate-Cost-USD"],
    )  # fmt: skip
    service = request.app[SERVICE]
    created = int(service.clock())
    if parsed.delivery.stream:
        return await _stream(request, served, parsed, headers, created)
    catalog = request.app[CATALOG]
    family = catalog.family_of(catalog.resolve(parsed.request.model))
    url_mode = parsed.delivery.response_format == "url"
    base = _base_url(request) if url_mode else None
    parts = images_body(served, parsed.request, family, base_url=base, created=created)
    size = sum(map(len, parts))
    kept = service.remembers(answered)
    if size > _SEND_IN_PARTS and not kept:
        return await _send_parts(request, parts, size, headers)
    body = b"".join(parts)
    if kept:
        service.remember(answered, own | {"Content-Type": _JSON}, body, created)
    return web.Response(body=body, content_type=_JSON, headers=headers)


# Answers larger than this are written part by part (the base64 of each image as read),
# not joined first: a 1.5 MB image's answer is 2 MB, and joining it cost a third of a store
# hit's CPU (bench/: 1.5 MB store hits 620 -> 850 req/s at 64 connections).
_SEND_IN_PARTS = 256 * 1024


async def _send_parts(
    request: web.Request, parts: list[bytes], size: int, headers: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    response.content_type = _JSON
    response.content_length = size
    await response.prepare(request)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response


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
