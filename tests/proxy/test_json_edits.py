"""JSON edits (OpenAI's EditImageBodyJsonParam): images by image_url, same key as multipart.

The multipart side is the official SDK's `client.images.edit`; the SDK has no typed method
for a JSON edit, so that side is `client.post` with the JSON body, checked against OpenAI's
schema (tests/fakes/openai_edit_json_schema.json, extracted from openai-openapi).
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import httpx
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import UploadSettings
from tests.conftest import start_gateway
from tests.fakes.images import make_mask, make_png

SCHEMA = json.loads((Path(__file__).parents[1] / "fakes/openai_edit_json_schema.json").read_text())
PNG = make_png(64, 64, (30, 120, 200))
MODEL = "gpt-image-1.5"


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def edit_body(*urls: str, mask: str | None = None, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": MODEL,
        "prompt": "make it blue",
        "images": [{"image_url": url} for url in urls],
        **fields,
    }
    if mask is not None:
        body["mask"] = {"image_url": mask}
    jsonschema.validate(body, SCHEMA)  # what we send is what OpenAI's schema allows
    return body


async def post_json(client, body: dict[str, object]) -> httpx.Response:
    try:
        return await client.post("/images/edits", cast_to=httpx.Response, body=body)
    except Exception as exc:  # the SDK raises on 4xx: hand back its response
        response = getattr(exc, "response", None)
        if response is None:
            raise
        return response


async def test_a_data_url_edit_shares_the_key_of_the_same_multipart_upload(gateway):
    client = gateway.client()
    first = await client.images.with_raw_response.edit(
        model=MODEL, prompt="make it blue", image=("a.png", PNG, "image/png"), size="1024x1024"
    )
    assert first.headers["x-cache"] == "MISS"
    got = await post_json(client, edit_body(data_url(PNG), size="1024x1024"))
    assert got.status_code == 200, got.text
    assert got.headers["x-cache"] == "HIT"
    assert got.headers["x-cache-key"] == first.headers["x-cache-key"]
    assert len(gateway.provider.calls) == 1
    assert got.json()["data"][0]["b64_json"]


async def test_a_json_edit_with_a_mask_and_two_images(gateway):
    client = gateway.client()
    other = make_png(64, 64, (200, 10, 10))
    body = edit_body(data_url(PNG), data_url(other), mask=data_url(make_mask(64, 64)))
    got = await post_json(client, body)
    assert got.status_code == 200, got.text
    request = gateway.provider.calls[0].request
    assert len(request.images) == 2
    assert request.mask is not None
    assert set(gateway.provider.calls[0].uploads) == {*request.images, request.mask}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (
            {"model": MODEL, "prompt": "x", "images": [{"file_id": "file-abc123"}]},
            "images[0].file_id",
            "unsupported_parameter",
        ),
        (
            {"model": MODEL, "prompt": "x", "images": [{"image_url": "https://example.com/a.png"}]},
            "images[0].image_url",
            "invalid_image_url",
        ),
        (
            {"model": MODEL, "prompt": "x", "images": [{"image_url": "ftp://example.com/a.png"}]},
            "images[0].image_url",
            "invalid_value",
        ),
        (
            {"model": MODEL, "prompt": "x", "images": [{"image_url": "data:image/png,abc"}]},
            "images[0].image_url",
            "invalid_value",
        ),
        (
            {"model": MODEL, "prompt": "x", "images": [{"image_url": "data:;base64,!!!!"}]},
            "images[0].image_url",
            "invalid_value",
        ),
        (
            {
                "model": MODEL,
                "prompt": "x",
                "images": [{"image_url": data_url(make_png(256, 256, (9, 9, 200))[:300])}],
            },
            "images[0].image_url",
            "invalid_image_format",
        ),
        ({"model": MODEL, "prompt": "x", "images": []}, "images", "invalid_value"),
        (
            {"model": "dall-e-2", "prompt": "x", "images": [{"image_url": data_url(PNG)}]},
            "model",
            "unsupported_model",
        ),
        (
            {"model": MODEL, "prompt": "x", "n": "2", "images": [{"image_url": data_url(PNG)}]},
            "n",
            "invalid_type",
        ),
    ],
    ids=[
        "file_id",
        "http off",
        "ftp",
        "not base64",
        "bad base64",
        "truncated",
        "none",
        "dalle",
        "n",
    ],
)
async def test_bad_json_edits_are_400s(gateway, body, param, code):
    got = await post_json(gateway.client(), body)
    assert got.status_code == 400, got.text
    error = got.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert not gateway.provider.calls


@pytest.fixture
async def image_host():
    """A loopback server that serves PNG at /a.png."""
    app = web.Application()
    hits: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=PNG, content_type="image/png")

    app.router.add_get("/a.png", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    server.hits = hits  # type: ignore[attr-defined]
    yield server
    await server.close()


async def test_a_url_from_a_host_not_listed_is_refused_unfetched(
    settings, provider, clock, image_host
):
    settings = replace(settings, uploads=UploadSettings(url_hosts=("images.example.com",)))
    gw = await start_gateway(settings, provider, clock)
    try:
        url = str(image_host.make_url("/a.png"))
        got = await post_json(gw.client(), edit_body(url))
        assert got.status_code == 400, got.text
        error = got.json()["error"]
        assert (error["param"], error["code"]) == ("images[0].image_url", "invalid_image_url")
        assert "url_hosts" in error["message"]
        assert not image_host.hits
        assert not provider.calls
    finally:
        await gw.close()


async def test_a_url_from_a_listed_host_is_fetched_and_keyed_by_its_bytes(
    settings, provider, clock, image_host
):
    # Loopback is a private address: the operator allows it by naming it exactly, with its
    # port (url_hosts follow download_hosts: no port means 443/80).
    listed = f"127.0.0.1:{image_host.port}"
    settings = replace(settings, uploads=UploadSettings(url_hosts=(listed,)))
    gw = await start_gateway(settings, provider, clock)
    try:
        client = gw.client()
        url = str(image_host.make_url("/a.png"))
        got = await post_json(client, edit_body(url))
        assert got.status_code == 200, got.text
        assert got.headers["x-cache"] == "MISS"
        assert image_host.hits == ["/a.png"]
        again = await client.images.with_raw_response.edit(
            model=MODEL, prompt="make it blue", image=("a.png", PNG, "image/png")
        )
        assert again.headers["x-cache"] == "HIT"
        assert again.headers["x-cache-key"] == got.headers["x-cache-key"]
        assert len(provider.calls) == 1
    finally:
        await gw.close()


async def test_data_urls_are_cut_out_but_other_text_is_kept_exactly(gateway):
    """The data: URLs are kept out of json.loads and put back; a prompt that reads like one,
    or that quotes one inside escaped quotes, is the client's text, unchanged."""
    client = gateway.client()
    prompt = 'data:not-an-image \\"data:also-text\\" end'
    raw = (
        '{"model": "gpt-image-1.5", "prompt": "' + prompt + '", '
        '"images": [{"image_url": "' + data_url(PNG) + '"}]}'
    )
    assert json.loads(raw)["prompt"] == 'data:not-an-image "data:also-text" end'
    jsonschema.validate(json.loads(raw), SCHEMA)
    got = await client.post(
        "/images/edits",
        cast_to=httpx.Response,
        content=raw.encode(),
        options={"headers": {"Content-Type": "application/json"}},
    )
    assert got.status_code == 200, got.text
    same = await client.images.with_raw_response.edit(
        model=MODEL, prompt=json.loads(raw)["prompt"], image=("a.png", PNG, "image/png")
    )
    assert same.headers["x-cache"] == "HIT"
    assert same.headers["x-cache-key"] == got.headers["x-cache-key"]


async def test_what_json_loads_sees_of_an_edit_is_held_to_a_generation_body(gateway):
    """A 3 MB data URL is fine; 600 KB of anything else in the body is not."""
    client = gateway.client()
    big = make_png(1024, 1024, (1, 2, 3))
    noisy = big + b"\0" * (3 * 1024 * 1024)  # trailing bytes after IEND: still decodes
    ok = await post_json(client, edit_body(data_url(noisy)))
    assert ok.status_code == 200, ok.text
    padded = edit_body(data_url(PNG), user="u" * (600 * 1024))
    refused = await post_json(client, padded)
    assert refused.status_code == 413, refused.text


def test_url_hosts_is_read_from_the_config_and_checked(tmp_path):
    from proxy.config import ConfigError, load_settings

    path = tmp_path / "config.toml"
    assert load_settings(None, {}).uploads.url_hosts == ()  # off by default
    path.write_text('[uploads]\nurl_hosts = ["127.0.0.1", "*.example.com"]\n')
    assert load_settings(path, {}).uploads.url_hosts == ("127.0.0.1", "*.example.com")
    for bad in ("url_hosts = [1]", 'url_hosts = "example.com"', 'hosts = ["x"]'):
        path.write_text(f"[uploads]\n{bad}\n")
        with pytest.raises(ConfigError, match="uploads"):
            load_settings(path, {})


_texts = st.one_of(
    st.text(max_size=30),
    st.builds(lambda a, b: a + "data:" + b, st.text(max_size=8), st.text(max_size=30)),
    st.sampled_from(["data:", '"data:x"', "data:\\", 'data:"', "\\", "data:image/png;base64,AA=="]),
)
_values = st.recursive(
    st.one_of(_texts, st.integers(), st.none(), st.booleans()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_texts, inner, max_size=4)
    ),
    max_leaves=12,
)


@given(body=st.dictionaries(_texts, _values, max_size=6), ascii_only=st.booleans())
def test_cutting_out_data_urls_never_changes_the_parsed_body(body, ascii_only):
    """Whatever JSON a client sends, the cut-and-restore parse equals json.loads."""
    from proxy.image_refs import _cut_data_urls, _restore

    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    cut, pieces = _cut_data_urls(raw, "n0nce")
    assert _restore(json.loads(cut), pieces, "n0nce") == json.loads(raw)
