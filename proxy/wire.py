"""HTTP bodies <-> core values: JSON and multipart parsing, OpenAI-shaped responses."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from policies.catalog import Family
from policies.errors import InvalidRequest, PayloadTooLarge
from policies.models import ImageRequest
from proxy.app_keys import SETTINGS
from proxy.service import Served, ServedImage

__all__ = [
    "GENERATION_BODY_MAX",
    "blob_url",
    "check_json_size",
    "check_unicode",
    "images_body",
    "read_body",
    "read_json",
    "sse_events",
    "too_large",
]

_EXT = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "svg": "svg"}
_COMPACT = (",", ":")  # one separator style in every response body

# A generation body is a prompt (32,000 characters: 384 KiB even as \\u escapes of emoji)
# and a few short fields. Capping its bytes and its separators caps what json.loads does on
# the loop (a few ms at most, against seconds for 64 MiB, the server's default cap).
GENERATION_BODY_MAX = 512 * 1024
_JSON_SEPARATORS_MAX = 33_000  # a 32,000-character prompt full of commas, and the fields


async def read_json(
    request: web.Request, *, max_bytes: int | None = None, usage: str | None = None
) -> Mapping[str, object]:
    """The JSON object in the body. With `usage` (how the openai SDK calls the route), a
    Content-Type other than application/json is refused as OpenAI refuses it."""
    kind = request.content_type
    if kind.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise InvalidRequest(
            "This endpoint takes a JSON body (Content-Type: application/json), not a form.",
            code="invalid_content_type",
        )
    if usage is not None and kind != "application/json":
        raise InvalidRequest(
            f"Unsupported content type: '{kind[:80]}'. This endpoint takes a JSON body: send "
            f"the header 'Content-Type: application/json' (the openai SDK does: {usage}).",
            code="invalid_content_type",
        )
    if max_bytes is not None and (request.content_length or 0) > max_bytes:
        raise _json_too_large(max_bytes)
    raw = await read_body(request)
    if max_bytes is not None:
        check_json_size(raw, max_bytes)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a JSON object such as "
            '{"prompt": "a red fox", "model": "gpt-image-1.5"}.',
            code="invalid_json",
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The JSON body must be an object.", code="invalid_json")
    if _may_hold_surrogates(raw):
        check_unicode(body)
    return body


# Where a lone surrogate can come from in what json.loads decodes (with "surrogatepass"): a
# \u escape, UTF-8-style bytes of a surrogate (ED A0-BF ..), or a UTF-16/32 body (NULs in its
# first bytes, or a BOM). A body with none of these holds none: the check is skipped.
_SURROGATE_HINT = re.compile(rb"\\u|\xed[\xa0-\xbf]")


def _may_hold_surrogates(raw: bytes) -> bool:
    return (
        b"\x00" in raw[:4]
        or raw[:2] in (b"\xff\xfe", b"\xfe\xff")
        or _SURROGATE_HINT.search(raw) is not None
    )


def check_unicode(body: object) -> None:
    """JSON may spell lone surrogates ("\\ud800"), which are no Unicode text at all."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "The JSON body contains invalid Unicode (a lone surrogate escape such as "
            "\\ud800); send valid UTF-8 text.",
            code="invalid_json",
        ) from None


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large(request) from exc


def check_json_size(raw: bytes, max_bytes: int) -> None:
    """Bound what json.loads will do on the loop: the bytes, and the values (the cost is per
    value: 512 KiB of `[0,0,...` or `{"a":0,...` takes tens of ms; a long prompt is one
    string, cheap at any length). Counting separators overcounts those inside strings,
    which only a prompt of more than 32,000 characters could reach."""
    if len(raw) > max_bytes:
        raise _json_too_large(max_bytes)
    if len(raw) > _JSON_SEPARATORS_MAX:
        separators = sum(raw.count(c) for c in (b",", b":", b"[", b"{"))
        if separators > _JSON_SEPARATORS_MAX:
            raise InvalidRequest(
                f"The JSON body has more than {_JSON_SEPARATORS_MAX} commas, colons and "
                "brackets; a generation request is a prompt and a few short fields.",
                code="invalid_json",
            )


def _json_too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The JSON body is larger than this endpoint accepts ({max_bytes // 1024} KiB); "
        "a request is a prompt and a few short fields."
    )


def too_large(request: web.Request) -> PayloadTooLarge:
    limit = request.app[SETTINGS].server.max_body_mb
    return PayloadTooLarge(
        f"The request body is larger than this gateway accepts ({limit} MiB); "
        "send smaller images or raise [server] max_body_mb.",
    )


def blob_url(base: str, sha256: str, fmt: str) -> str:
    return f"{base.rstrip('/')}/images/{sha256}.{_EXT[fmt]}"


def images_body(
    served: Served,
    request: ImageRequest,
    family: Family,
    *,
    base_url: str | None,
    created: int,
) -> list[bytes]:
    """The ImagesResponse JSON, as the parts that join into it (the base64 of each image one
    part of its own, so a large answer can be sent without copying it into one body).
    `base_url` set means url mode, else b64_json.

    Written by hand around the base64 (which needs no JSON escaping): `json.dumps` of a
    2 MB string would otherwise be most of a large hit's cost."""
    parts = [b'{"created":', str(int(created)).encode(), b',"data":[']
    for position, image in enumerate(served.images):
        if position:
            parts.append(b",")
        if base_url is not None:
            url = blob_url(base_url, image.entry.blob, image.entry.format)
            parts.append(b'{"url":' + json.dumps(url).encode())
        else:
            parts += [b'{"b64_json":"', _base64_of(image), b'"']
        if image.entry.revised_prompt is not None:
            parts.append(b',"revised_prompt":' + json.dumps(image.entry.revised_prompt).encode())
        parts.append(b"}")
    parts.append(b"]")
    if family.gpt_fields:
        echo = json.dumps(_echo(served, request), separators=_COMPACT)
        parts.append(b"," + echo[1:-1].encode())
    parts.append(b"}")
    return parts


def _base64_of(image: ServedImage) -> bytes:
    """The image's base64: as a hit read it from the blob store, else (a miss) encoded."""
    if image.b64 is not None:
        return image.b64
    assert image.data is not None
    return base64.b64encode(image.data)


def _echo(served: Served, request: ImageRequest) -> dict[str, Any]:
    first = served.images[0].entry
    return {
        "background": "transparent" if request.background == "transparent" else "opaque",
        "output_format": request.output_format,
        "size": f"{first.width}x{first.height}",
        "quality": "medium" if request.quality == "auto" else request.quality,
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "total_tokens": 0,
            "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
        },
    }


def sse_events(served: Served, request: ImageRequest, *, created: int) -> Sequence[bytes]:
    """One `*.completed` server-sent event per image (WIRE.md §1.5)."""
    kind = "image_edit" if request.operation == "edit" else "image_generation"
    echo = _echo(served, request)
    events: list[bytes] = []
    for image in served.images:
        payload = {
            "type": f"{kind}.completed",
            "b64_json": _base64_of(image).decode("ascii"),
            "created_at": created,
            **echo,
        }
        data = json.dumps(payload, separators=_COMPACT)
        events.append(f"event: {kind}.completed\ndata: {data}\n\n".encode())
    return events
