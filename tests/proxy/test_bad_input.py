"""A table of bad requests: each gets an OpenAI-style 4xx, and the gateway still answers."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest

from tests.fakes.images import make_png

GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"
VAR = "/v1/images/variations"
JSON = {"Content-Type": "application/json"}


def form(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]] | None = None):
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, value)
    for name, (filename, content, ctype) in (files or {}).items():
        data.add_field(name.split("#")[0], content, filename=filename, content_type=ctype)
    return data


PNG = make_png(64, 64, (250, 0, 0))
BIG_PNG = make_png(256, 256, (10, 200, 30))  # its header alone (first 300 bytes) probes fine
CASES = [
    # (name, method, path, body builder, status, param, code)
    ("malformed json", "POST", GEN, lambda: b'{"prompt": "x",', 400, None, "invalid_json"),
    ("json array", "POST", GEN, lambda: b"[1, 2]", 400, None, "invalid_json"),
    ("empty body", "POST", GEN, lambda: b"", 400, None, "invalid_json"),
    ("not utf-8", "POST", GEN, lambda: b'{"prompt": "\xff\xfe"}', 400, None, "invalid_json"),
    (
        "lone surrogate",
        "POST",
        GEN,
        lambda: b'{"prompt": "a \\ud800 b"}',
        400,
        None,
        "invalid_json",
    ),
    (  # UTF-8-style bytes of a surrogate: json.loads decodes them with "surrogatepass"
        "surrogate bytes",
        "POST",
        GEN,
        lambda: b'{"prompt": "a \xed\xa0\x80 b"}',
        400,
        None,
        "invalid_json",
    ),
    (  # a UTF-16 body (json.loads detects it) with a lone surrogate and no escape
        "utf-16 lone surrogate",
        "POST",
        GEN,
        lambda: '{"prompt": "a \ud800 b"}'.encode("utf-16-le", "surrogatepass"),
        400,
        None,
        "invalid_json",
    ),
    (
        "deep nesting",
        "POST",
        GEN,
        lambda: b"[" * 100_000 + b"]" * 100_000,
        400,
        None,
        "invalid_json",
    ),
    ("prompt wrong type", "POST", GEN, lambda: {"prompt": ["x"]}, 400, "prompt", "invalid_type"),
    ("n out of range", "POST", GEN, lambda: {"prompt": "x", "n": 99}, 400, "n", "invalid_value"),
    ("n huge int", "POST", GEN, lambda: {"prompt": "x", "n": 10**40}, 400, "n", "invalid_value"),
    (
        "size wrong",
        "POST",
        GEN,
        lambda: {"prompt": "x", "size": "9x9"},
        400,
        "size",
        "invalid_size",
    ),
    (
        "empty size",
        "POST",
        GEN,
        lambda: {"prompt": "x", "model": "dall-e-2", "size": ""},
        400,
        "size",
        "invalid_value",
    ),
    (
        "empty model",
        "POST",
        GEN,
        lambda: {"prompt": "x", "model": ""},
        400,
        "model",
        "invalid_value",
    ),
    (
        "empty size, variations",
        "POST",
        VAR,
        lambda: form({"size": ""}, {"image": ("a.png", PNG, "image/png")}),
        400,
        "size",
        "invalid_value",
    ),
    (
        "unknown model",
        "POST",
        GEN,
        lambda: {"prompt": "x", "model": "dall-e-9"},
        404,
        "model",
        "model_not_found",
    ),
    (
        "unknown field",
        "POST",
        GEN,
        lambda: {"prompt": "x", "colour": "red"},
        400,
        "colour",
        "unknown_parameter",
    ),
    (
        "style on gpt",
        "POST",
        GEN,
        lambda: {"prompt": "x", "style": "vivid"},
        400,
        "style",
        "unsupported_parameter",
    ),
    (
        "form to json route",
        "POST",
        GEN,
        lambda: form({"prompt": "x"}),
        400,
        None,
        "invalid_content_type",
    ),
    (
        "json edit without images",
        "POST",
        EDIT,
        lambda: {"prompt": "x"},
        400,
        "images",
        "missing_required_parameter",
    ),
    (
        "edit without image",
        "POST",
        EDIT,
        lambda: form({"prompt": "x"}),
        400,
        "image",
        "missing_required_parameter",
    ),
    (
        "non-image upload",
        "POST",
        EDIT,
        lambda: form({"prompt": "x"}, {"image": ("a.png", b"hello, not an image", "image/png")}),
        400,
        "image",
        "invalid_image_format",
    ),
    (
        "text file as png",
        "POST",
        EDIT,
        lambda: form({"prompt": "x"}, {"image": ("a.png", b"%PDF-1.4 fake", "image/png")}),
        400,
        "image",
        "invalid_image_format",
    ),
    (
        "mask of wrong size",
        "POST",
        EDIT,
        lambda: form(
            {"prompt": "x"},
            {
                "image": ("a.png", PNG, "image/png"),
                "mask": ("m.png", make_png(32, 32, alpha=True), "image/png"),
            },
        ),
        400,
        "mask",
        "invalid_mask_size",
    ),
    (
        "mask without alpha",
        "POST",
        EDIT,
        lambda: form(
            {"prompt": "x"},
            {"image": ("a.png", PNG, "image/png"), "mask": ("m.png", PNG, "image/png")},
        ),
        400,
        "mask",
        "invalid_image_format",
    ),
    (
        "truncated png",
        "POST",
        EDIT,
        lambda: form({"prompt": "x"}, {"image": ("a.png", BIG_PNG[:300], "image/png")}),
        400,
        "image",
        "invalid_image_format",
    ),
    (
        "truncated mask",
        "POST",
        EDIT,
        lambda: form(
            {"prompt": "x"},
            {
                "image": ("a.png", PNG, "image/png"),
                "mask": ("m.png", make_png(64, 64, alpha=True)[:-20], "image/png"),
            },
        ),
        400,
        "mask",
        "invalid_image_format",
    ),
    (
        "truncated png, variations",
        "POST",
        VAR,
        lambda: form({}, {"image": ("a.png", BIG_PNG[: len(BIG_PNG) // 2], "image/png")}),
        400,
        "image",
        "invalid_image_format",
    ),
    (
        "variation non-square",
        "POST",
        VAR,
        lambda: form({}, {"image": ("a.png", make_png(64, 32), "image/png")}),
        400,
        "image",
        "invalid_image_shape",
    ),
    (
        "variation with prompt",
        "POST",
        VAR,
        lambda: form({"prompt": "x"}, {"image": ("a.png", PNG, "image/png")}),
        400,
        "prompt",
        "unknown_parameter",
    ),
    (
        "unknown route",
        "POST",
        "/v1/images/upscale",
        lambda: {"prompt": "x"},
        404,
        None,
        "not_found",
    ),
    ("wrong method", "GET", GEN, lambda: None, 405, None, "method_not_allowed"),
    ("unknown blob", "GET", "/images/" + "0" * 64 + ".png", lambda: None, 404, None, "not_found"),
    ("blob bad ext", "GET", "/images/" + "0" * 64 + ".exe", lambda: None, 404, None, "not_found"),
    ("blob short sha", "GET", "/images/abc.png", lambda: None, 404, None, "not_found"),
    (
        "path traversal",
        "GET",
        "/images/..%2F..%2Fetc%2Fpasswd",
        lambda: None,
        404,
        None,
        "not_found",
    ),
    ("bad max-age", "POST", GEN, lambda: {"prompt": "x"}, 400, None, "invalid_cache_control"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "status", "param", "code"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_request_gets_an_openai_error(
    gateway, name, method, path, body, status, param, code
):
    payload = body()
    headers = {"Cache-Control": "max-age=soon"} if name == "bad max-age" else {}
    kwargs: dict = {"headers": headers}
    if isinstance(payload, dict):
        kwargs["json"] = payload
    elif isinstance(payload, bytes):
        kwargs["data"] = payload
        kwargs["headers"] = {**headers, **JSON}
    elif payload is not None:
        kwargs["data"] = payload
    async with aiohttp.ClientSession() as http:
        async with http.request(method, gateway.root + path, **kwargs) as got:
            text = await got.text()
            assert got.status == status, text
            error = json.loads(text)["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert (error["param"], error["code"]) == (param, code), error
            assert error["message"]
            assert got.headers["X-Request-Id"]
        async with http.get(gateway.root + "/healthz") as alive:
            assert alive.status == 200
    assert not gateway.provider.calls


async def test_oversized_body_is_a_413(settings, provider, clock):
    from dataclasses import replace

    from tests.conftest import start_gateway

    settings = replace(settings, server=replace(settings.server, max_body_mb=1))
    gw = await start_gateway(settings, provider, clock)
    try:
        async with aiohttp.ClientSession() as http:
            big = io.BytesIO(json.dumps({"prompt": "x" * (2 * 1024 * 1024)}).encode())
            async with http.post(
                gw.base_url + "/images/generations", data=big, headers=JSON
            ) as got:
                assert got.status == 413
                assert (await got.json())["error"]["type"] == "invalid_request_error"
            files = {"image": ("a.png", io.BytesIO(b"\x89PNG" + b"0" * (2 << 20)), "image/png")}
            async with http.post(
                gw.base_url + "/images/edits", data=form({"prompt": "x"}, files)
            ) as got:
                assert got.status == 413
            async with http.get(gw.root + "/healthz") as alive:
                assert alive.status == 200
    finally:
        await gw.close()


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
async def test_generations_take_only_a_json_content_type(gateway, content_type):
    """As OpenAI: a JSON body sent as another type is refused, never parsed anyway."""
    body = json.dumps({"prompt": "a red fox"}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gateway.base_url + "/images/generations", data=body, headers=headers
        ) as got:
            assert got.status == 400
            error = (await got.json())["error"]
    assert error["code"] == "invalid_content_type"
    assert "application/json" in error["message"]
    assert not gateway.provider.calls


@pytest.mark.parametrize(
    ("path", "method", "wrong"),
    [
        (EDIT, "client.images.edit(", "create_variation"),
        (VAR, "client.images.create_variation(", "images.edit"),
    ],
)
async def test_a_wrong_content_type_names_the_routes_own_sdk_method(gateway, path, method, wrong):
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gateway.root + path, data=b"x=1", headers={"Content-Type": "text/plain"}
        ) as got:
            assert got.status == 400
            error = (await got.json())["error"]
    assert error["code"] == "invalid_content_type"
    assert method in error["message"]
    assert wrong not in error["message"]
