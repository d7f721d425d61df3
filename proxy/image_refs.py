"""A JSON edit (OpenAI's EditImageBodyJsonParam) -> the same `Form` a multipart edit gives.

`images[].image_url` and `mask.image_url` are data: URLs (always accepted) or http(s) URLs
on the hosts the operator lists in `[uploads] url_hosts` (none by default). Those are
fetched with the providers' downloader (`proxy/providers/downloads.py`): its host rules,
redirect checks and size cap apply unchanged. The images are then the uploads' bytes, so a
JSON edit and the multipart upload of the same images have the same request key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Final

import httpx
from aiohttp import web

from policies.catalog import Catalog
from policies.errors import InvalidRequest, ProviderError
from policies.uploads import ImageRef, image_refs
from proxy.app_keys import SETTINGS
from proxy.config import Settings
from proxy.forms import Form
from proxy.imaging import probe_upload
from proxy.providers.downloads import Downloader
from proxy.wire import (
    GENERATION_BODY_MAX,
    check_json_size,
    check_unicode,
    read_body,
    too_large,
)

__all__ = ["read_json_edit", "read_json_edit_body"]

_SLICE: Final = 1024 * 1024  # base64 characters decoded between two turns of the loop
_FETCH_TIMEOUT: Final = 30.0
_DATA_URLS_MAX: Final = 17 + 3  # 16 images and a mask, and a few data: texts elsewhere
_BACKSLASH: Final = 0x5C


async def read_json_edit_body(request: web.Request) -> Mapping[str, object]:
    """The JSON edit's body, parsed without handing json.loads its data: URLs.

    json.loads holds the GIL (even in a thread) for as long as it runs: 20 MiB of base64
    in one string would keep every other request waiting. So each `"data:...` string (no
    escapes inside, as base64 needs none) is cut out of the raw bytes first and put back
    as text afterwards; what json.loads sees is held to the limits of a generation body."""
    if request.content_length and request.content_length > _max_body(request):
        raise too_large(request)
    raw = await read_body(request)
    nonce = secrets.token_hex(8)
    cut, pieces = _cut_data_urls(raw, nonce)
    check_json_size(cut, GENERATION_BODY_MAX)
    try:
        body = json.loads(cut)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request.", code="invalid_json"
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The JSON body must be an object.", code="invalid_json")
    check_unicode(body)  # before the cut-out strings are back: they are plain base64 text
    restored = _restore(body, pieces, nonce)
    assert isinstance(restored, dict)
    return restored


def _max_body(request: web.Request) -> int:
    return int(request.app[SETTINGS].server.max_body_mb) * 1024 * 1024


def _cut_data_urls(raw: bytes, nonce: str) -> tuple[bytes, list[memoryview]]:
    """`raw` with each unescaped `"data:...` string replaced by `"<nonce>:<index>"`."""
    view = memoryview(raw)
    out: list[bytes | memoryview] = []
    pieces: list[memoryview] = []
    done = 0
    start = raw.find(b'"data:')
    while start >= 0 and len(pieces) < _DATA_URLS_MAX:
        end = raw.find(b'"', start + 1)
        if end < 0:
            break
        escaped = start > 0 and raw[start - 1] == _BACKSLASH  # a \" inside another string
        if not escaped and raw.find(b"\\", start, end) < 0:
            out += [view[done : start + 1], f"{nonce}:{len(pieces)}".encode()]
            pieces.append(view[start + 1 : end])
            done = end
        start = raw.find(b'"data:', end + 1)
    out.append(view[done:])
    return b"".join(out), pieces


def _restore(value: object, pieces: list[memoryview], nonce: str) -> object:
    """Put the cut-out strings back, wherever they were (lists and objects are small)."""
    if isinstance(value, str):
        head, colon, index = value.partition(":")
        if head == nonce and colon and index.isdigit() and int(index) < len(pieces):
            try:
                return str(pieces[int(index)], "utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    "The JSON body is not valid UTF-8.", code="invalid_json"
                ) from None
        return value
    if isinstance(value, list):
        return [_restore(item, pieces, nonce) for item in value]
    if isinstance(value, dict):
        return {
            str(_restore(key, pieces, nonce)): _restore(item, pieces, nonce)
            for key, item in value.items()
        }
    return value


async def read_json_edit(body: Mapping[str, object], catalog: Catalog, settings: Settings) -> Form:
    images_max = max(
        (f.edit_images_max for f in catalog.families.values() if f.gpt_fields), default=1
    )
    refs, mask_ref, fields = image_refs(body, images_max)
    every = [*refs, *([mask_ref] if mask_ref else [])]
    max_bytes = settings.server.max_body_mb * 1024 * 1024
    blobs = await _fetch(every, settings.uploads.url_hosts, max_bytes)
    form = Form(fields=fields)
    for ref, data in zip(every, blobs, strict=True):
        info = await asyncio.to_thread(probe_upload, data, param=ref.param)
        form.uploads[info.sha256] = data
        if ref is mask_ref:
            form.mask = info
        else:
            form.images.append(info)
    return form


async def _fetch(refs: Sequence[ImageRef], hosts: tuple[str, ...], max_bytes: int) -> list[bytes]:
    remote = [ref for ref in refs if not ref.is_data]
    if remote and not hosts:
        raise InvalidRequest(
            f"Invalid '{remote[0].param}': this gateway fetches no http(s) image URLs (its "
            "[uploads] url_hosts is empty). Send the image as a data: URL or as a multipart "
            "upload.",
            param=remote[0].param,
            code="invalid_image_url",
        )
    fetched: dict[str, bytes] = {}
    if remote:
        fetched = await _download(remote, hosts, max_bytes)
    out: list[bytes] = []
    for ref in refs:
        out.append(fetched[ref.param] if ref.param in fetched else await _decode(ref, max_bytes))
    return out


async def _download(
    refs: Sequence[ImageRef], hosts: tuple[str, ...], max_bytes: int
) -> dict[str, bytes]:
    downloader = Downloader("uploads", hosts, max_bytes=max_bytes, timeout=_FETCH_TIMEOUT)
    try:
        found: dict[str, bytes] = {}
        for ref in refs:  # every URL is checked before any is fetched
            try:
                downloader.check(_url(ref))
            except ProviderError as exc:
                raise _refused(ref, exc) from None
        for ref in refs:
            try:
                found[ref.param] = await downloader.fetch(ref.url)
            except ProviderError as exc:
                raise _refused(ref, exc) from None
        return found
    finally:
        await downloader.aclose()


def _url(ref: ImageRef) -> httpx.URL:
    try:
        return httpx.URL(ref.url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InvalidRequest(
            f"Invalid '{ref.param}': not a valid URL.", param=ref.param, code="invalid_image_url"
        ) from None


def _refused(ref: ImageRef, exc: ProviderError) -> InvalidRequest:
    """The downloader speaks of a provider's output; say it of the client's URL."""
    reason = exc.message.partition("will not fetch: ")[2].rstrip(".") or exc.message
    reason = reason.replace("download_hosts", "[uploads] url_hosts")
    return InvalidRequest(
        f"Invalid '{ref.param}': the gateway could not fetch the image ({reason}).",
        param=ref.param,
        code="invalid_image_url",
    )


async def _decode(ref: ImageRef, max_bytes: int) -> bytes:
    """The bytes of a base64 data: URL, decoded a slice at a time (the loop gets a turn
    between slices: 20 MiB of base64 would otherwise hold it for ~40 ms)."""
    payload = ref.url.partition(",")[2]
    if len(payload) * 3 // 4 > max_bytes:
        raise InvalidRequest(
            f"Invalid '{ref.param}': the image is larger than this gateway accepts.",
            param=ref.param,
            code="image_too_large",
        )
    parts: list[bytes] = []
    try:
        for start in range(0, len(payload), _SLICE):
            parts.append(base64.b64decode(payload[start : start + _SLICE], validate=True))
            await asyncio.sleep(0)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"Invalid '{ref.param}': the data: URL is not valid base64.", param=ref.param
        ) from None
    return b"".join(parts)
