"""Multipart bodies (edits, variations) -> the fields and uploads the core parses.

A form is read part by part and each part is admitted (`policies.uploads.admit_part`) as
it arrives: an unknown field, a surplus image or one part past the route's cap is refused
with a 400 before the rest of the body is read. The body reaches aiohttp's multipart reader
through `_PacedStream`, which gives the event loop a turn before every read and caps the
lines (boundaries, part headers, a preamble), so no body, however it is built, can keep the
loop from answering other requests.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam

from policies.errors import InvalidRequest, PayloadTooLarge
from policies.models import UploadInfo
from policies.uploads import FormRules, FormTally, admit_part
from proxy.imaging import probe_upload
from proxy.wire import too_large

__all__ = ["Form", "read_form"]

_BRACKET = re.compile(r"^([A-Za-z_]+)\[([A-Za-z_]+)\](?:\[([A-Za-z_]+)\])?$")
_CHUNK = 256 * 1024
_URLENCODED_MAX = 1024 * 1024  # fields only: a long prompt, percent-encoded
_LINES_PER_PART = 10  # a boundary, a few header lines, the blank line, the CRLF after data
# What aiohttp's multipart reader raises on a body it cannot parse.
_BAD_DISPOSITION = (BadContentDispositionHeader, BadContentDispositionParam)
_MALFORMED = (
    ValueError,
    AssertionError,
    RuntimeError,
    LookupError,
    HttpProcessingError,
    *_BAD_DISPOSITION,
)
# aiohttp only *warns* about a Content-Disposition it cannot parse, then reads the part with
# no name. For this gateway that is a malformed body: raise it (these warning classes are
# aiohttp's multipart reader's own, and this process parses multipart only here).
for _category in _BAD_DISPOSITION:
    warnings.filterwarnings("error", category=_category)


@dataclass
class Form:
    fields: dict[str, object] = field(default_factory=dict)
    images: list[UploadInfo] = field(default_factory=list)
    mask: UploadInfo | None = None
    markup: UploadInfo | None = None
    uploads: dict[str, bytes] = field(default_factory=dict)


class _TooManyLines(Exception):
    pass


class _PacedStream:
    """The request body as aiohttp's multipart reader reads it: every read first gives the
    loop a turn, and the lines read (not the bytes of a part's data) are capped."""

    def __init__(self, inner: StreamReader, max_lines: int) -> None:
        self._inner = inner
        self._lines_left = max_lines

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        self._lines_left -= 1
        if self._lines_left < 0:
            raise _TooManyLines
        await asyncio.sleep(0)
        return await self._inner.readline(max_line_length=max_line_length)

    async def read(self, n: int = -1) -> bytes:
        await asyncio.sleep(0)
        return await self._inner.read(n)

    def at_eof(self) -> bool:
        return self._inner.at_eof()

    def unread_data(self, data: bytes) -> None:
        with warnings.catch_warnings():  # aiohttp's own reader relies on it
            warnings.simplefilter("ignore", DeprecationWarning)
            self._inner.unread_data(data)


async def read_form(request: web.Request, rules: FormRules, max_bytes: int) -> Form:
    if request.content_type == "application/x-www-form-urlencoded":
        return Form(fields=await _read_urlencoded(request, rules))
    if not request.content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "This endpoint takes multipart/form-data with the image as a file part "
            f"(the openai SDK sends it that way: {rules.usage}).",
            code="invalid_content_type",
        )
    stream = _PacedStream(request.content, rules.parts_max * _LINES_PER_PART + 4)
    try:
        reader = MultipartReader(request.headers, cast(StreamReader, stream))
        return await _read_parts(request, reader, rules, max_bytes)
    except _TooManyLines:
        raise InvalidRequest(
            "The multipart body is malformed: too many lines outside the parts' data "
            "(a preamble, boundaries or part headers).",
            code="invalid_multipart",
        ) from None
    except _MALFORMED as exc:
        raise InvalidRequest(
            f"The multipart body is malformed: {_reason(exc)}", code="invalid_multipart"
        ) from None


async def _read_urlencoded(request: web.Request, rules: FormRules) -> dict[str, object]:
    """A form with no files (so never a complete edit): its fields, admitted as a
    multipart form's would be, from a body capped at `_URLENCODED_MAX` bytes."""
    body = b""
    while chunk := await request.content.read(_CHUNK):
        body += chunk
        if len(body) > _URLENCODED_MAX:
            raise PayloadTooLarge(
                "A urlencoded form can carry no image and at most 1 MiB of fields; send "
                f"multipart/form-data instead (as the openai SDK does: {rules.usage})."
            )
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=rules.parts_max
        )
    except ValueError as exc:  # bad UTF-8, or more fields than the cap
        raise InvalidRequest(
            f"The form body is malformed: {_reason(exc)}", code="invalid_multipart"
        ) from None
    fields: dict[str, object] = {}
    tally = FormTally()
    for name, value in pairs:
        _, tally = admit_part(rules, tally, name, has_filename=False)
        _set_field(fields, name, value)
    return fields


def _reason(exc: Exception) -> str:
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    text = text.splitlines()[0] if text.strip() else type(exc).__name__
    return (text[:120] + "…") if len(text) > 120 else text


async def _read_parts(
    request: web.Request, reader: MultipartReader, rules: FormRules, max_bytes: int
) -> Form:
    form, tally, total = Form(), FormTally(), 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise InvalidRequest(
                "Nested multipart bodies are not supported.", code="invalid_multipart"
            )
        name = part.name or ""
        kind, tally = admit_part(rules, tally, name, has_filename=part.filename is not None)
        text_max = rules.text_max_bytes if kind == "field" else max_bytes
        data = await _read_part(part, min(text_max, max_bytes - total))
        if data is None:
            if kind == "field" and total + text_max <= max_bytes:
                raise InvalidRequest(f"Field '{name[:40]}' is too long.", param=name[:40])
            raise too_large(request)
        total += len(data)
        await _add_part(form, kind, name, data)
    return form


async def _read_part(part: BodyPartReader, budget: int) -> bytes | None:
    """The part's data, or None as soon as it passes `budget` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > budget:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _add_part(form: Form, kind: str, name: str, data: bytes) -> None:
    if kind != "field":
        # By magic bytes, never by the part's type; hashing 50 MB is kept off the loop.
        info = await asyncio.to_thread(probe_upload, data, param=kind)
        form.uploads[info.sha256] = data
        if kind == "image":
            form.images.append(info)
        elif getattr(form, kind) is not None:
            raise InvalidRequest(f"Only one '{kind}' file may be sent.", param=kind)
        else:
            setattr(form, kind, info)
        return
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
