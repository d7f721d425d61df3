"""What both fakes share: a loopback aiohttp server, the request log and scripted faults.

Every request is recorded *before* any fault is applied, so a test can count retries. Faults are
queued per test and consumed in FIFO order by the requests they match (`path` is a substring of
the request path, `method` an HTTP method; both optional). Order per request: record, delay,
failure, provider auth, handler, body fault (`spoil_next`: the handler's answer sent badly —
stalled mid-body, dripped, truncated, padded as an oversized chunked body, or the connection
reset before any answer).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Any, Literal, Self, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from . import images

__all__ = [
    "REC",
    "T0",
    "BodyFault",
    "Failure",
    "FakeServer",
    "FilePart",
    "ImageFault",
    "RecordedRequest",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Queued = TypeVar("_Queued", "Failure", "Delay", "BodyFault")
BodyFaultKind = Literal["stall", "drip", "truncate", "oversize", "reset"]


@dataclass(frozen=True, slots=True)
class FilePart:
    """A multipart file part (one with a filename or a non-text Content-Type)."""

    field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake received it (faulted requests included)."""

    method: str
    path: str
    route: str  # "POST /v1/predictions/{id}/cancel": method + the route's canonical path
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive: rec.headers["authorization"]
    body: bytes
    json: Any = None  # the parsed JSON body, when there was one
    form: dict[str, list[str]] = field(default_factory=dict)  # multipart text fields
    files: list[FilePart] = field(default_factory=list)  # multipart file parts, in order
    field_names: list[str] = field(default_factory=list)  # every multipart field name, in order
    status: int | None = None  # the status the fake answered with

    def text(self, name: str) -> str | None:
        """The last multipart text value of `name`."""
        values = self.form.get(name)
        return values[-1] if values else None


REC = web.RequestKey("rec", RecordedRequest)  # the request's log entry, for handlers
T0 = web.RequestKey("t0", float)  # time.monotonic() when the request arrived


@dataclass(slots=True)
class Failure:
    status: int
    times: int
    retry_after: float | None
    body: Any
    content_type: str | None
    headers: dict[str, str]
    should_retry: bool | None
    path: str | None
    method: str | None


@dataclass(slots=True)
class Delay:
    seconds: float
    times: int
    path: str | None
    method: str | None


@dataclass(slots=True)
class BodyFault:
    """How to send the next matching answer badly (see `FakeServer.spoil_next`)."""

    kind: BodyFaultKind
    times: int
    seconds: float
    size: int
    path: str | None
    method: str | None


@dataclass(slots=True)
class ImageFault:
    """How to spoil the next generated image (consumed one per output image)."""

    times: int = 1
    corrupt: bool = False
    truncated: bool = False
    wrong_size: tuple[int, int] | None = None
    blank: bool = False
    wrong_format: str | None = None

    def apply(self, key: str, width: int, height: int, fmt: str, transparent: bool) -> bytes:
        w, h = self.wrong_size or (width, height)
        out_fmt = self.wrong_format or fmt
        if self.corrupt:
            return images.corrupt(out_fmt)
        data = (
            images.blank(w, h, out_fmt)
            if self.blank
            else images.render(key, w, h, out_fmt, transparent=transparent)
        )
        return images.truncate(data) if self.truncated else data


def _matches(item: Failure | Delay | BodyFault, rec: RecordedRequest) -> bool:
    if item.path is not None and item.path not in rec.path:
        return False
    return item.method is None or item.method.upper() == rec.method


def _take(queue: list[_Queued], rec: RecordedRequest) -> _Queued | None:
    for item in queue:
        if _matches(item, rec):
            item.times -= 1
            if item.times <= 0:
                queue.remove(item)
            return item
    return None


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]], list[FilePart], list[str]]:
    """Split a multipart/form-data body into text fields, file parts and field names.
    Parts with a filename, or with a non-text Content-Type, are files (`filename` "" when
    missing); the others are UTF-8 text."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    form: dict[str, list[str]] = {}
    files: list[FilePart] = []
    names: list[str] = []
    if not boundary:
        return form, files, names
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        msg = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        name = str(msg.get_param("name", header="content-disposition") or "")
        filename = msg.get_filename()
        ctype = msg.get("content-type")
        names.append(name)
        if filename is None and (ctype is None or str(ctype).startswith("text/")):
            form.setdefault(name, []).append(data.decode("utf-8", "replace"))
        else:
            ctype = str(ctype or "application/octet-stream")
            files.append(FilePart(name, filename or "", ctype, data))
    return form, files, names


class FakeServer:
    """Base of the fakes: serves an aiohttp app on 127.0.0.1 with a random port.

    Use as `async with Fake() as fake:` (or `await fake.start()` / `await fake.close()`).
    Subclasses add routes in `_routes` and shape errors in `_fault_response`/`_not_found`.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.calls: Counter[str] = Counter()  # "POST /v1/images/generations" -> count
        self.outputs: list[bytes] = []  # every image the fake produced, faults applied
        self.files: dict[str, bytes] = {}  # name under /files/ -> bytes
        self.port = 0
        self._fails: list[Failure] = []
        self._delays: list[Delay] = []
        self._image_faults: list[ImageFault] = []
        self._body_faults: list[BodyFault] = []
        self._redirects: list[tuple[str, int]] = []
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`, with no path."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024**2)
        self._routes(app)
        app.router.add_get("/files/{name:.+}", self._get_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- scripting ---------------------------------------------------------------------------
    def fail_next(
        self,
        status: int = 500,
        times: int = 1,
        retry_after: float | None = None,
        body: Any = None,
        *,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        should_retry: bool | None = None,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status`.

        `body`: None for the provider's usual error body for that status, a dict/list sent as
        JSON, or str/bytes sent verbatim (`content_type` defaults to text/html for those).
        `retry_after` (seconds): OpenAI gets `retry-after-ms` and `retry-after` (rounded up);
        Replicate gets `Retry-After` in whole seconds (rounded up; 0 means retry at once).
        `should_retry` sets OpenAI's `x-should-retry`. `headers` are added as given.
        """
        self._fails.append(
            Failure(
                status,
                times,
                retry_after,
                body,
                content_type,
                dict(headers or {}),
                should_retry,
                path,
                method,
            )
        )

    def delay_next(
        self, seconds: float, times: int = 1, *, path: str | None = None, method: str | None = None
    ) -> None:
        """Hold the next `times` matching requests for `seconds` before answering."""
        self._delays.append(Delay(seconds, times, path, method))

    def spoil_next(
        self,
        kind: BodyFaultKind,
        *,
        seconds: float = 5.0,
        size: int = 4 * 1024 * 1024,
        times: int = 1,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """Send the next `times` matching answers badly (the handler still runs):
        "stall": headers and half the body, then `seconds` of silence, then the rest;
        "drip": the body 16 bytes at a time, `seconds` apart;
        "truncate": a Content-Length for the whole body, half of it, then the connection closed;
        "oversize": chunked, no Content-Length, the body then zeros up to `size` bytes;
        "reset": the connection closed before any answer."""
        self._body_faults.append(BodyFault(kind, times, seconds, size, path, method))

    def next_image(
        self,
        *,
        corrupt: bool = False,
        truncated: bool = False,
        wrong_size: tuple[int, int] | None = None,
        blank: bool = False,
        wrong_format: str | None = None,
        times: int = 1,
    ) -> None:
        """Spoil the next `times` generated images (one per output image, across requests)."""
        self._image_faults.append(
            ImageFault(times, corrupt, truncated, wrong_size, blank, wrong_format)
        )

    def redirect_download_to(self, url: str, times: int = 1) -> None:
        """Answer the next `times` GET /files/... with 302 to `url` (if `url` ends with "/",
        the file's name is appended). `http://localhost:<port>/files/...` reaches this same fake
        under another host name."""
        self._redirects.append((url, times))

    def reset(self) -> None:
        """Forget the request log, counters, outputs and all queued faults."""
        self.requests.clear()
        self.calls.clear()
        self.outputs.clear()
        self._fails.clear()
        self._delays.clear()
        self._image_faults.clear()
        self._body_faults.clear()
        self._redirects.clear()

    @staticmethod
    def _pop(queue: list[list[Any]]) -> Any:
        """Take one use of the first scripted `[value, times]` in `queue` (None if empty)."""
        if not queue:
            return None
        value = queue[0][0]
        queue[0][1] -= 1
        if queue[0][1] <= 0:
            queue.pop(0)
        return value

    # -- log helpers -------------------------------------------------------------------------
    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path contains `path` (and whose method is `method`)."""
        return [
            r
            for r in self.requests
            if path in r.path and (method is None or r.method == method.upper())
        ]

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # -- for subclasses ----------------------------------------------------------------------
    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _fault_response(self, fault: Failure, rec: RecordedRequest) -> web.Response:
        raise NotImplementedError

    def _not_found(self, rec: RecordedRequest) -> web.Response:
        return web.Response(status=404, text="Not Found")

    def _auth_response(self, request: web.Request) -> web.Response | None:
        return None

    def produce_image(
        self, key: str, width: int, height: int, fmt: str, *, transparent: bool = False
    ) -> bytes:
        """Render one output image, applying the next queued `ImageFault`, and log it."""
        fault = self._image_faults[0] if self._image_faults else None
        if fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                self._image_faults.pop(0)
            data = fault.apply(key, width, height, fmt, transparent)
        else:
            data = images.render(key, width, height, fmt, transparent=transparent)
        self.outputs.append(data)
        return data

    def store_file(self, name: str, data: bytes) -> str:
        """Serve `data` at `/files/<name>`; returns the URL on this fake."""
        self.files[name] = data
        return f"{self.origin}/files/{name}"

    @staticmethod
    def retry_after_seconds(fault: Failure) -> str | None:
        return None if fault.retry_after is None else str(math.ceil(fault.retry_after))

    # -- plumbing ----------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[T0] = time.monotonic()
        rec = await self._record(request)
        request[REC] = rec
        response = await self._dispatch(request, handler, rec)
        rec.status = response.status
        return response

    async def _dispatch(
        self, request: web.Request, handler: Handler, rec: RecordedRequest
    ) -> web.StreamResponse:
        delay = _take(self._delays, rec)
        if delay is not None:
            await asyncio.sleep(delay.seconds)
        fault = _take(self._fails, rec)
        if fault is not None:
            return self._fault_response(fault, rec)
        if request.path.startswith("/v1/"):
            denied = self._auth_response(request)
            if denied is not None:
                return denied
        spoil = _take(self._body_faults, rec)
        if spoil is not None and spoil.kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=499)  # never sent: the connection is gone
        try:
            response = await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return self._not_found(rec)
        if spoil is None or not isinstance(response, web.Response):
            return response
        return await _send_badly(request, response, spoil)

    async def _record(self, request: web.Request) -> RecordedRequest:
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else request.path
        body = await request.read()
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            route=f"{request.method} {canonical}",
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
        )
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            rec.form, rec.files, rec.field_names = parse_multipart(ctype, body)
        elif body:
            try:
                rec.json = json.loads(body)
            except ValueError:
                rec.json = None
        self.requests.append(rec)
        self.calls[rec.route] += 1
        return rec

    async def _get_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self._redirects:
            url, times = self._redirects[0]
            if times <= 1:
                self._redirects.pop(0)
            else:
                self._redirects[0] = (url, times - 1)
            location = url + name if url.endswith("/") else url
            return web.Response(status=302, headers={"Location": location})
        data = self.files.get(name)
        if data is None:
            return web.Response(status=404, text="Not Found")
        fmt = images.sniff_format(data) or name.rsplit(".", 1)[-1]
        ctype = images.MIME_TYPES.get(fmt, "application/octet-stream")
        return web.Response(body=data, content_type=ctype)


async def _send_badly(
    request: web.Request, response: web.Response, fault: BodyFault
) -> web.StreamResponse:
    body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
    out = web.StreamResponse(status=response.status, headers=response.headers)
    out.headers.popall("Content-Length", None)
    if fault.kind == "oversize":
        out.enable_chunked_encoding()
    else:
        out.content_length = len(body)
    half = len(body) // 2
    try:
        await out.prepare(request)
        if fault.kind == "oversize":
            await out.write(body)
            for start in range(len(body), fault.size, 64 * 1024):
                await out.write(bytes(min(64 * 1024, fault.size - start)))
        elif fault.kind == "drip":
            for start in range(0, len(body), 16):
                await out.write(body[start : start + 16])
                await asyncio.sleep(fault.seconds)
        else:
            await out.write(body[:half])
            if fault.kind == "truncate":
                assert request.transport is not None
                request.transport.close()
                return out
            await asyncio.sleep(fault.seconds)
            await out.write(body[half:])
        await out.write_eof()
    except (ConnectionError, RuntimeError):  # the client gave up: what the fault is for
        pass
    return out
