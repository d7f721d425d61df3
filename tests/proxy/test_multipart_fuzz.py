"""Malformed multipart bodies get our own 400, never a 500 (a real server, a real client)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import start_gateway
from tests.fakes.images import make_png

ROUTES = ["/v1/images/edits", "/v1/images/variations"]
PNG = make_png(64, 64, (250, 0, 0))


async def post(http: aiohttp.ClientSession, url: str, body: bytes, boundary: str):
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with http.post(url, data=body, headers=headers) as got:
        return got.status, await got.read()


def assert_ours(status: int, raw: bytes) -> None:
    assert status < 500, raw
    if status >= 400:
        error = json.loads(raw)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        b"--XX\r\nbroken",
        b"--XX\r\nbroken\r\n\r\nv\r\n--XX--\r\n",
        b"--XX\r\n: no name\r\n\r\nv\r\n--XX--\r\n",
        b'--XX\r\nContent-Disposition: form-data; name="model"\r\n\r\nv',
        b'--XX\r\nContent-Disposition: form-data; name="_charset_"\r\n\r\n'
        + b"x" * 40
        + b"\r\n--XX--\r\n",
        b"--XX\r\nContent-Type: multipart/mixed; boundary=YY\r\n\r\n--YY--\r\n--XX--\r\n",
        b"no boundary at all",
        # aiohttp only warns about a Content-Disposition it cannot parse (a 500 under
        # `filterwarnings = error`, a nameless part in production): a malformed body.
        b'--XX\r\nContent-Disposition: form-data; name="image"; filename="a.png"\xcdN@\r\n'
        b"\r\nv\r\n--XX--\r\n",
    ],
)
async def test_malformed_multipart_is_a_400(gateway, path, body):
    async with aiohttp.ClientSession() as http:
        status, raw = await post(http, gateway.root + path, body, "XX")
        assert status == 400, raw
        error = json.loads(raw)["error"]
        assert error["code"] in ("invalid_multipart", "missing_required_parameter"), error
    assert not gateway.provider.calls


_PIECES = [
    b"--B",
    b"--B--",
    b"\r\n",
    b"\n",
    b'Content-Disposition: form-data; name="prompt"',
    b'Content-Disposition: form-data; name="image"; filename="a.png"',
    b'Content-Disposition: form-data; name="image[]"; filename="a.png"',
    b'Content-Disposition: form-data; name="mask"; filename="m.png"',
    b'Content-Disposition: form-data; name="svg[model]"',
    b"Content-Disposition: form-data",
    b"Content-Type: image/png",
    b"Content-Type: multipart/mixed; boundary=B",
    b"Content-Transfer-Encoding: base64",
    b"Content-Length: 3",
    b"Content-Length: -1",
    b"X: \xff",
    b"broken",
    b"a red fox",
    PNG,
    PNG[:40],
]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["B", "XX", "b" * 70, "a'()+_,-./:=?"]))
    pieces = st.one_of(st.sampled_from(_PIECES), st.binary(max_size=64))
    body = b"".join(draw(st.lists(pieces, max_size=40)))
    return body.replace(b"--B", b"--" + boundary.encode()), boundary


async def test_random_multipart_bodies_never_cause_a_500(settings, provider, clock):
    gw = await start_gateway(settings, provider, clock)
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as http:

            @hypothesis_settings(
                max_examples=150, deadline=None, suppress_health_check=list(HealthCheck)
            )
            @given(drawn=bodies(), path=st.sampled_from(ROUTES))
            def check(drawn: tuple[bytes, str], path: str) -> None:
                body, boundary = drawn
                request = post(http, gw.root + path, body, boundary)
                status, raw = asyncio.run_coroutine_threadsafe(request, loop).result(60)
                assert_ours(status, raw)

            await asyncio.to_thread(check)
            async with http.get(gw.root + "/healthz") as alive:
                assert alive.status == 200
    finally:
        await gw.close()
