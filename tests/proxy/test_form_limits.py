"""Hostile multipart bodies: refused as the parts arrive, and never holding the event loop.

The raw-socket tests declare a large Content-Length, send only the first parts and then wait:
the 400 must come back while the rest of the body is still unsent, which shows the gateway
stopped at the offending part instead of reading (and parsing) everything first.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.fakes.images import make_png

EDIT = "/v1/images/edits"
VAR = "/v1/images/variations"
BOUNDARY = "XX"
PNG1 = make_png(1, 1)
PNG64 = make_png(64, 64, (250, 0, 0))
NEVER_SENT = 50 * 1024 * 1024  # declared in Content-Length, never sent
# Sent after the offending part, as the start of its data: aiohttp's reader hands over a
# part only after one more read of the body past its end (the gateway reads 256 KiB at most).
MORE = b"x" * (300 * 1024)


def field(name: str, value: str = "v") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def file_part(name: str, data: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
        f'name="{name}"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    return head + data + b"\r\n"


def end() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


async def exchange(gw, path: str, body: bytes, *, length: int | None = None):
    """Send a request whose body is `body` (all of it, or the start of a longer declared
    one); return (status, error envelope). A gateway that waits for the unsent rest times
    out here, after a generous minute."""
    host, port = gw.server.host, gw.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {length if length is not None else len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(
            _response(reader), timeout=float(__import__("os").environ.get("T", "60"))
        )
    finally:
        writer.close()


async def _response(reader: asyncio.StreamReader):
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, json.loads(await reader.readexactly(length))["error"]


HOSTILE = [
    # (name, route, the parts sent before the gateway must answer, param, code)
    ("unknown field", EDIT, field("colour"), "colour", "unknown_parameter"),
    ("many unknown fields", EDIT, b"".join(field(f"f{i}") for i in range(50)), "f0", None),
    ("unknown field, variations", VAR, field("prompt"), "prompt", "unknown_parameter"),
    ("unknown file", EDIT, file_part("picture", PNG1), "picture", "unknown_parameter"),
    (
        "surplus images",
        EDIT,
        field("prompt") + b"".join(file_part("image[]", PNG1) for _ in range(17)),
        "image",
        "invalid_value",
    ),
    (
        "surplus images, variations",
        VAR,
        file_part("image", PNG64) + file_part("image", PNG64),
        "image",
        "invalid_value",
    ),
    (
        "surplus nested fields",
        EDIT,
        b"".join(field(f"svg[k{chr(97 + i)}]") for i in range(9)),
        "svg",
        "invalid_value",
    ),
    ("a field sent twice", EDIT, field("prompt") + field("prompt"), "prompt", "invalid_value"),
    ("a long preamble", EDIT, b"\r\n" * 100_000 + field("prompt"), None, "invalid_multipart"),
    (
        "many header lines",
        EDIT,
        f"--{BOUNDARY}\r\n".encode() + b"X-Pad: 1\r\n" * 10_000,
        None,
        "invalid_multipart",
    ),
    ("a prompt too long", EDIT, field("prompt", "p" * 257 * 1024), "prompt", "invalid_value"),
]


@pytest.mark.parametrize(
    ("name", "path", "parts", "param", "code"), HOSTILE, ids=[c[0] for c in HOSTILE]
)
async def test_hostile_form_is_refused_before_the_rest_is_read(
    gateway, name, path, parts, param, code
):
    sent = parts + MORE
    status, error = await exchange(gateway, path, sent, length=len(sent) + NEVER_SENT)
    assert status == 400, error
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert error["message"]
    assert not gateway.provider.calls


@pytest.mark.parametrize("path", [EDIT, VAR])
async def test_wrong_form_body_with_everything_sent_is_a_400(gateway, path):
    body = b"".join(field(f"f{i}") for i in range(30_000)) + end()
    status, error = await exchange(gateway, path, body)
    assert (status, error["code"], error["param"]) == (400, "unknown_parameter", "f0")


async def test_a_legal_form_gives_the_loop_a_turn_between_parts(gateway):
    """The whole body arrives in one write; parsing it must still let other tasks run
    between every read), so no single request can keep /healthz waiting."""
    names = ["model", "prompt", "size", "quality", "n", "user", "output_format", "background"]
    values = {"model": "gpt-image-1.5", "n": "1", "size": "1024x1024", "quality": "low"}
    values |= {"output_format": "png", "background": "auto"}
    parts = [field(n, values.get(n, "v")) for n in names]
    parts += [field(f"svg[k{chr(97 + i)}]") for i in range(8)]  # svg is not for this model
    parts += [file_part("image[]", PNG64)]
    body = b"".join(parts) + end()

    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(ticker())
    try:
        status, error = await exchange(gateway, EDIT, body)
    finally:
        task.cancel()
    assert (status, error["param"]) == (400, "svg"), error  # parsed to the end, then refused
    # A part is read in several steps (its boundary, its header lines, its data), each one
    # after a turn of the loop; without them the whole body is one step (17 turns in all).
    assert turns >= 3 * len(parts), turns
    assert not gateway.provider.calls


async def test_a_generation_body_past_the_cap_is_refused_unparsed(gateway):
    """json.loads runs on the loop: a body past 512 KiB is refused before it is parsed
    (here a 600 KB array, which parsed would be 'not an object')."""
    import aiohttp

    body = b"[" + b"0," * 300_000 + b"0]"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gateway.base_url + "/images/generations",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as got:
            assert got.status == 413, await got.text()
            assert (await got.json())["error"]["type"] == "invalid_request_error"


async def test_a_generation_body_of_many_small_values_is_refused_unparsed(gateway):
    """Parsing costs per value: 40,000 numbers are refused before json.loads (parsed, the
    body would be refused later, for its unknown field 'a')."""
    import aiohttp

    many = b'{"prompt":"x","a":[' + b"0," * 40_000 + b"0]}"
    long_prompt = {"prompt": "a, " * 10_000 + "fox"}  # 10,000 commas inside one string
    async with aiohttp.ClientSession() as http:
        url = gateway.base_url + "/images/generations"
        async with http.post(url, data=many, headers={"Content-Type": "application/json"}) as got:
            error = (await got.json())["error"]
            assert (got.status, error["code"]) == (400, "invalid_json"), error
        async with http.post(url, json=long_prompt) as got:
            assert got.status == 200, await got.text()
