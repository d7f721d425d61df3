"""HTTP bodies <-> core values: JSON and multipart parsing, OpenAI-shaped responses."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from policies.catalog import Family
from policies.errors import InvalidRequest, PayloadTooLarge
from policies.models import ImageRequest, UploadInfo
from proxy.imaging import probe_upload
from proxy.keys import SETTINGS
from proxy.memory import B64Cache
from proxy.service import Served

__all__ = ["Form", "blob_url", "images_body", "read_body", "read_form", "read_json", "sse_events"]

_EXT = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "svg": "svg"}
_BRACKET = re.compile(r"^([A-Za-z_]+)\[([A-Za-z_]+)\](?:\[([A-Za-z_]+)\])?$")
_FILE_FIELDS = ("image", "image[]", "mask", "markup")


async def read_json(request: web.Request) -> Mapping[str, object]:
    if request.content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise InvalidRequest(
            "This endpoint takes a JSON body (Content-Type: application/json), not a form.",
            code="invalid_content_type",
        )
    raw = await read_body(request)
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
    try:  # JSON may spell lone surrogates ("\ud800"), which are no Unicode text at all
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "The JSON body contains invalid Unicode (a lone surrogate escape such as "
            "\\ud800); send valid UTF-8 text.",
            code="invalid_json",
        ) from None
    return body


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _too_large(request) from exc


def _too_large(request: web.Request) -> PayloadTooLarge:
    limit = request.app[SETTINGS].server.max_body_mb
    return PayloadTooLarge(
        f"The request body is larger than this gateway accepts ({limit} MiB); "
        "send smaller images or raise [server] max_body_mb.",
    )


@dataclass
class Form:
    fields: dict[str, object] = field(default_factory=dict)
    images: list[UploadInfo] = field(default_factory=list)
    mask: UploadInfo | None = None
    markup: UploadInfo | None = None
    uploads: dict[str, bytes] = field(default_factory=dict)


async def read_form(request: web.Request, max_bytes: int) -> Form:
    if request.content_type == "application/x-www-form-urlencoded":
        fields = await _read_urlencoded(request)
        return Form(fields=fields)
    if not request.content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "This endpoint takes multipart/form-data with the image as a file part "
            "(the openai SDK sends it that way: client.images.edit(image=open(...), ...)).",
            code="invalid_content_type",
        )
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise InvalidRequest("The multipart body is malformed.", code="invalid_multipart") from exc
    form, total = Form(), 0
    while True:
        try:
            part = await reader.next()
        except (ValueError, AssertionError) as exc:
            raise InvalidRequest(
                "The multipart body is malformed.", code="invalid_multipart"
            ) from exc
        if part is None:
            return form
        if not isinstance(part, BodyPartReader):
            raise InvalidRequest(
                "Nested multipart bodies are not supported.", code="invalid_multipart"
            )
        data = await _read_part(part, max_bytes - total, request)
        total += len(data)
        await _add_part(form, part, data)


async def _read_urlencoded(request: web.Request) -> dict[str, object]:
    try:
        posted = await request.post()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _too_large(request) from exc
    except ValueError as exc:
        raise InvalidRequest("The form body is malformed.", code="invalid_multipart") from exc
    fields: dict[str, object] = {}
    for name, value in posted.items():
        if isinstance(value, str):
            _set_field(fields, name, value)
    return fields


async def _read_part(part: BodyPartReader, budget: int, request: web.Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(256 * 1024):
        size += len(chunk)
        if size > budget:
            raise _too_large(request)
        chunks.append(chunk)
    return b"".join(chunks)


async def _add_part(form: Form, part: BodyPartReader, data: bytes) -> None:
    name = part.name or ""
    if name in _FILE_FIELDS:
        param = "image" if name == "image[]" else name
        # By magic bytes, never by the part's type; hashing 50 MB is kept off the loop.
        info = await asyncio.to_thread(probe_upload, data, param=param)
        form.uploads[info.sha256] = data
        if param == "image":
            form.images.append(info)
        elif getattr(form, param) is not None:
            raise InvalidRequest(f"Only one '{param}' file may be sent.", param=param)
        else:
            setattr(form, param, info)
        return
    if part.filename is not None:
        raise InvalidRequest(
            f"Unexpected file part '{name[:40]}'.", param=name[:40], code="unknown_parameter"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"Field '{name[:40]}' is not valid UTF-8.", param=name[:40]) from exc
    _set_field(form.fields, name, text)


def _set_field(fields: dict[str, object], name: str, text: str) -> None:
    match = _BRACKET.match(name)
    if match is None:
        if name in fields:
            raise InvalidRequest(f"Field '{name[:40]}' was sent twice.", param=name[:40])
        fields[name] = text
        return
    top, key, sub = match.groups()
    nested = fields.setdefault(top, {})
    if not isinstance(nested, dict):
        raise InvalidRequest(f"Field '{top}' was sent both plain and nested.", param=top)
    if sub is None:
        nested[key] = text
    else:
        inner = nested.setdefault(key, {})
        if isinstance(inner, dict):
            inner[sub] = text


def blob_url(base: str, sha256: str, fmt: str) -> str:
    return f"{base.rstrip('/')}/images/{sha256}.{_EXT[fmt]}"


def images_body(
    served: Served,
    request: ImageRequest,
    family: Family,
    *,
    base_url: str | None,
    created: int,
    b64: B64Cache,
) -> bytes:
    """The ImagesResponse JSON, as bytes. `base_url` set means url mode, else b64_json.

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
            assert image.data is not None
            parts += [b'{"b64_json":"', b64.encode(image.entry.blob, image.data), b'"']
        if image.entry.revised_prompt is not None:
            parts.append(b',"revised_prompt":' + json.dumps(image.entry.revised_prompt).encode())
        parts.append(b"}")
    parts.append(b"]")
    if family.gpt_fields:
        parts.append(b"," + json.dumps(_echo(served, request))[1:-1].encode())
    parts.append(b"}")
    return b"".join(parts)


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
        assert image.data is not None
        payload = {
            "type": f"{kind}.completed",
            "b64_json": base64.b64encode(image.data).decode("ascii"),
            "created_at": created,
            **echo,
        }
        events.append(f"event: {kind}.completed\ndata: {json.dumps(payload)}\n\n".encode())
    return events
