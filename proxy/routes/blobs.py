"""GET /images/<sha256>.<ext>: immutable, content-addressed image bytes."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web

from policies.errors import NotFound
from policies.models import CONTENT_TYPES
from proxy.app_keys import BLOB_MEMORY, STORES
from proxy.imaging import sniff

__all__ = ["routes"]

routes = web.RouteTableDef()

_SHA = re.compile(r"[0-9a-f]{64}")
_EXTS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "gif": "gif", "svg": "svg"}
_IMMUTABLE = "public, max-age=31536000, immutable"
# Blobs up to this size are answered from memory (fastest); larger ones stream from disk.
_STREAM_ABOVE = 4 * 1024 * 1024
_CHUNK = 256 * 1024


@routes.get("/images/{name}")
async def get_blob(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    sha, _, ext = name.partition(".")
    fmt = _EXTS.get(ext)
    if fmt is None or _SHA.fullmatch(sha) is None:
        raise NotFound(
            f"No image at '/images/{name[:90]}': image URLs look like /images/<sha256>.png.",
        )
    etag = f'"{sha}"'
    headers = {"ETag": etag, "Cache-Control": _IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    memory = request.app[BLOB_MEMORY]
    kept = memory.get(sha)
    if kept is not None:  # verified when it was kept; immutable since
        if etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=headers)
        if sniff(kept) != fmt:
            raise NotFound(f"No image with address {sha[:16]}… in the {ext} format.")
        return web.Response(body=kept, content_type=CONTENT_TYPES[fmt], headers=headers)
    blobs = request.app[STORES].blobs
    # The disk store reads on the loop (measured cheaper than a thread hand-off); only a
    # large blob is streamed from its file in chunks read by a thread.
    blob_file = await blobs.open(sha)
    if blob_file is not None and etag in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers=headers)
    if blob_file is not None and blob_file.size > _STREAM_ABOVE:
        return await _stream_file(request, blob_file.path, blob_file.size, fmt, headers)
    data = await blobs.get(sha)
    if data is None or sniff(data) != fmt:
        raise NotFound(f"No image with address {sha[:16]}… in the {ext} format.")
    memory.put(sha, data)
    return web.Response(body=data, content_type=CONTENT_TYPES[fmt], headers=headers)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",")} if header else set()


async def _stream_file(
    request: web.Request, path: Path, size: int, fmt: str, headers: dict[str, str]
) -> web.StreamResponse:
    with open(path, "rb") as handle:  # noqa: ASYNC230 - reads below go through a thread
        head = await asyncio.to_thread(handle.read, 4096)
        if sniff(head) != fmt:
            raise NotFound("No image with that address in that format.")
        response = web.StreamResponse(headers={**headers, "Content-Type": CONTENT_TYPES[fmt]})
        response.content_length = size
        await response.prepare(request)
        await response.write(head)
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response
