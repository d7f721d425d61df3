"""The OpenAI Images adapter, driven through the real `openai` SDK against `FakeOpenAI`."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from policies.errors import ProviderError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from policies.models import ImageRequest
from policies.pricing import Usage
from proxy.catalog_loader import load_catalog
from proxy.config import ProviderSettings, Secret
from proxy.ports import ProviderCall, ProviderResult
from proxy.providers.openai_images import OpenAIImagesProvider
from tests.fakes import images
from tests.fakes.base import REC
from tests.fakes.openai_models import OUTPUT_TOKENS
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-proj-imagegate-test-0123456789abcdef"
CATALOG = load_catalog()


class FakeOpenAIWithVariations(FakeOpenAI):
    """`FakeOpenAI` plus a minimal `POST /v1/images/variations` (dall-e-2, multipart), which
    the shared fake does not serve because the endpoint is retired upstream."""

    def _routes(self, app: web.Application) -> None:
        super()._routes(app)
        app.router.add_post("/v1/images/variations", self._variations)

    async def _variations(self, request: web.Request) -> web.Response:
        rec = request[REC]
        parts = [p for p in rec.files if p.field == "image"]
        ok = rec.text("response_format") == "b64_json" and rec.text("model") == "dall-e-2"
        if len(parts) != 1 or not ok or "prompt" in rec.form:
            return web.json_response({"error": {"message": "bad variation"}}, status=400)
        width, height = map(int, (rec.text("size") or "1024x1024").split("x"))
        n = int(rec.text("n") or 1)
        made = [self.produce_image(f"var|{i}", width, height, "png") for i in range(n)]
        data = [{"b64_json": base64.b64encode(img).decode()} for img in made]
        return web.json_response({"created": int(time.time()), "data": data})


def settings(base_url: str, **kw: Any) -> ProviderSettings:
    kw.setdefault("api_key", Secret(KEY))
    return ProviderSettings(name="openai", kind="openai", base_url=base_url, **kw)


def uploads(*files: bytes) -> tuple[tuple[str, ...], dict[str, bytes]]:
    keyed = {hashlib.sha256(data).hexdigest(): data for data in files}
    return tuple(keyed), keyed


def make_call(
    model: str, operation: str = "generate", *, n: int = 1, **fields: Any
) -> ProviderCall:
    files = fields.pop("uploads", {})
    fields = {"prompt": "a red fox", "size": "1024x1024", "quality": "low", **fields}
    fields.setdefault("output_format", "png")
    request = ImageRequest(operation=operation, model=model, **fields)  # type: ignore[arg-type]
    return ProviderCall(request, CATALOG.models[model], tuple(range(n)), files)


class Env:
    """The fake, and providers against it (closed after the test)."""

    def __init__(self, fake: FakeOpenAIWithVariations) -> None:
        self.fake = fake
        self.providers: list[OpenAIImagesProvider] = []

    def provider(self, base_url: str | None = None, **kw: Any) -> OpenAIImagesProvider:
        kw.setdefault("timeout_seconds", 5.0)
        p = OpenAIImagesProvider(settings(base_url or self.fake.base_url, **kw))
        self.providers.append(p)
        return p

    async def run(self, model: str, *args: Any, **kw: Any) -> ProviderResult:
        return await self.provider().generate(make_call(model, *args, **kw))

    async def fails(self, model: str, *args: Any, **kw: Any) -> ProviderError:
        with pytest.raises(ProviderError) as caught:
            await self.run(model, *args, **kw)
        return caught.value


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with FakeOpenAIWithVariations(api_key=KEY) as fake:
        e = Env(fake)
        yield e
        for p in e.providers:
            await p.aclose()


# -- success, per family -------------------------------------------------------------------
async def test_gpt_image_generation_returns_bytes_and_usage(env: Env) -> None:
    result = await env.run("gpt-image-1.5", n=2)
    assert [images.image_info(i.data)[:3] for i in result.images] == [("png", 1024, 1024)] * 2
    assert result.usage == Usage(text_in=3, image_out=2 * OUTPUT_TOKENS["low"]["1024x1024"])
    rec = env.fake.last
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    expected = {"model": "gpt-image-1.5", "prompt": "a red fox", "n": 2, "size": "1024x1024"}
    assert rec.json == {**expected, "quality": "low", "output_format": "png"}
    assert env.fake.calls["POST /v1/images/generations"] == 1


async def test_gpt_fields_are_sent_and_response_format_never(env: Env) -> None:
    fields = {"output_compression": 40, "background": "opaque", "moderation": "low"}
    # input_fidelity is for edits only: not sent with a generation.
    result = await env.run("gpt-image-1-mini", output_format="jpeg", input_fidelity="low", **fields)
    assert images.image_info(result.images[0].data)[0] == "jpeg"
    body = env.fake.last.json
    assert not {"response_format", "input_fidelity", "style"} & body.keys()
    assert body == {**body, "output_format": "jpeg", **fields}


async def test_a_format_the_model_cannot_make_is_asked_as_png(env: Env) -> None:
    await env.run("gpt-image-1.5", output_format="gif", output_compression=50)
    assert env.fake.last.json["output_format"] == "png"
    assert "output_compression" not in env.fake.last.json


async def test_newer_fields_go_in_the_body(env: Env) -> None:
    await env.run("gpt-image-2", extras=(("complexity", '"low"'),))
    assert env.fake.last.json["complexity"] == "low"


async def test_dalle3_gets_b64_and_style_and_keeps_revised_prompt(env: Env) -> None:
    result = await env.run("dall-e-3", size="1792x1024", quality="hd", style="natural")
    assert images.image_info(result.images[0].data)[:3] == ("png", 1792, 1024)
    assert "a red fox" in (result.images[0].revised_prompt or "") and result.usage is None
    body = env.fake.last.json
    assert body["response_format"] == "b64_json" and body["style"] == "natural"
    assert not {"output_format", "background", "moderation"} & body.keys()


async def test_dalle2_generation_sends_no_style(env: Env) -> None:
    result = await env.run("dall-e-2", size="256x256", quality="standard", style="vivid", n=3)
    assert len(result.images) == 3
    assert env.fake.last.json["response_format"] == "b64_json"
    assert "style" not in env.fake.last.json


async def test_gpt_edit_sends_an_image_list_and_a_mask(env: Env) -> None:
    webp = images.make_webp(64, 64)
    keys, files = uploads(images.make_png(64, 64), webp, images.make_mask(64, 64))
    result = await env.run(
        "gpt-image-1.5",
        "edit",
        images=keys[:2],
        mask=keys[2],
        input_fidelity="high",
        moderation="low",  # generations only: not sent with an edit
        uploads=files,
    )
    assert result.usage is not None and result.usage.image_in == 2 * 3050
    rec = env.fake.last
    assert rec.route == "POST /v1/images/edits"
    assert [(p.field, p.filename, p.content_type) for p in rec.files] == [
        ("image[]", "image-0.png", "image/png"),
        ("image[]", "image-1.webp", "image/webp"),
        ("mask", "mask.png", "image/png"),
    ]
    assert rec.files[1].data == webp
    assert rec.text("input_fidelity") == "high" and rec.text("n") == "1"
    assert "moderation" not in rec.form and "response_format" not in rec.form


async def test_dalle2_edit_sends_one_image_field(env: Env) -> None:
    keys, files = uploads(images.make_png(32, 32, alpha=True))
    fields = {"quality": "standard", "size": "256x256", "images": keys, "uploads": files}
    result = await env.run("dall-e-2", "edit", **fields)
    assert images.image_info(result.images[0].data)[:3] == ("png", 256, 256)
    assert [p.field for p in env.fake.last.files] == ["image"]
    assert env.fake.last.text("response_format") == "b64_json"


async def test_dalle2_variation(env: Env) -> None:
    keys, files = uploads(images.make_png(32, 32))
    fields = {"quality": "standard", "size": "512x512", "images": keys, "uploads": files}
    result = await env.run("dall-e-2", "variation", prompt=None, n=2, **fields)
    assert [images.image_info(i.data)[:3] for i in result.images] == [("png", 512, 512)] * 2
    assert env.fake.last.route == "POST /v1/images/variations"
    assert env.fake.last.files[0].filename == "image.png"


async def test_variation_on_a_gpt_model_is_rejected(env: Env) -> None:
    keys, files = uploads(images.make_png(32, 32))
    err = await env.fails("gpt-image-1.5", "variation", prompt=None, images=keys, uploads=files)
    assert isinstance(err, ProviderRejected) and env.fake.requests == []


# -- odd answers -----------------------------------------------------------------------------
async def test_a_url_answer_is_downloaded_from_the_configured_server(env: Env) -> None:
    png = images.make_png(16, 16)
    env.fake.fail_next(200, body={"created": 1, "data": [{"url": env.fake.store_file("a", png)}]})
    result = await env.run("dall-e-2", quality="standard")
    assert result.images[0].data == png


async def test_a_url_on_another_host_is_refused(env: Env) -> None:
    env.fake.store_file("a.png", images.make_png(16, 16))
    url = f"http://localhost:{env.fake.port}/files/a.png"
    env.fake.fail_next(200, body={"created": 1, "data": [{"url": url}]})
    err = await env.fails("dall-e-2", quality="standard")
    assert err.code == "upstream_download_refused"
    assert env.fake.calls["GET /files/{name}"] == 0


@pytest.mark.parametrize(
    "data", [[], [{"b64_json": "not base64!"}], [{"revised_prompt": "no image"}]]
)
async def test_unusable_answers_are_retryable_provider_errors(env: Env, data: list[Any]) -> None:
    env.fake.fail_next(200, body={"created": 1, "data": data})
    err = await env.fails("gpt-image-1.5")
    assert err.code == "invalid_output" and err.retryable


async def test_the_size_cap_applies_to_b64(env: Env) -> None:
    with pytest.raises(ProviderError) as caught:
        await env.provider(max_image_mb=0).generate(make_call("gpt-image-1.5"))
    assert caught.value.code == "upstream_image_too_large"


# -- errors ----------------------------------------------------------------------------------
def _error(code: str) -> dict[str, Any]:
    return {"error": {"message": "Refused.", "type": "invalid_request_error", "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (400, None, ProviderRejected, "upstream_rejected"),
        (400, _error("content_policy_violation"), ProviderRejected, "content_policy_violation"),
        (400, _error("moderation_blocked"), ProviderRejected, "content_policy_violation"),
        (401, None, ProviderUnavailable, "upstream_auth_failed"),
        (403, None, ProviderUnavailable, "upstream_auth_failed"),
        (404, None, ProviderUnavailable, "upstream_model_not_found"),
        (422, None, ProviderRejected, "upstream_rejected"),
        (429, None, ProviderUnavailable, "upstream_rate_limited"),
        (500, None, ProviderUnavailable, "upstream_unavailable"),
        (503, None, ProviderUnavailable, "upstream_unavailable"),
    ],
)
async def test_status_errors_map_once_without_sdk_retries(
    env: Env, status: int, body: Any, kind: type[ProviderError], code: str
) -> None:
    retry_after = 7.5 if status == 429 else None
    env.fake.fail_next(status, retry_after=retry_after, body=body, should_retry=status >= 500)
    err = await env.fails("gpt-image-1.5")
    assert type(err) is kind and err.code == code and err.retry_after == retry_after
    assert env.fake.calls["POST /v1/images/generations"] == 1  # SDK retries are off
    assert KEY not in f"{err} {err.message!r} {err!r} {err.__cause__!r} {err.__context__!r}"
    if code == "content_policy_violation":  # the upstream's own message reaches the client
        assert err.message == f"Refused. (request id {env.fake.request_ids[-1]})"
        assert err.status_hint == 400


async def test_a_wrong_key_never_shows_in_the_error(env: Env) -> None:
    wrong = "sk-proj-wrong-key-should-never-leak-42"
    with pytest.raises(ProviderUnavailable) as caught:
        await env.provider(api_key=Secret(wrong)).generate(make_call("gpt-image-1.5"))
    assert env.fake.last.status == 401 and caught.value.code == "upstream_auth_failed"
    text = f"{caught.value} {caught.value!r} {caught.value.__cause__!r}"
    assert wrong not in text and wrong[-4:] not in text


async def test_timeout(env: Env) -> None:
    env.fake.delay_next(0.6)
    with pytest.raises(ProviderTimeout):
        await env.provider(timeout_seconds=0.2).generate(make_call("gpt-image-1.5"))


async def test_unreachable_server(env: Env) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderUnavailable) as caught:
        await env.provider(f"http://127.0.0.1:{port}/v1").generate(make_call("gpt-image-1.5"))
    assert caught.value.retryable and KEY not in str(caught.value)


async def test_credentials(env: Env) -> None:
    assert env.provider().has_credentials()
    assert not env.provider(enabled=False).has_credentials()
    empty = env.provider(api_key=Secret(""))
    assert not empty.has_credentials()
    with pytest.raises(ProviderUnavailable) as caught:
        await empty.generate(make_call("gpt-image-1.5"))
    assert caught.value.code == "upstream_auth_failed" and env.fake.requests == []


# -- origins (Hardening #9) ------------------------------------------------------------------
async def test_a_url_on_another_port_of_the_same_host_is_refused(env: Env) -> None:
    """The default download host is the configured server's origin, port included."""
    async with FakeOpenAI() as other:  # another service on 127.0.0.1
        url = other.store_file("a.png", images.make_png(16, 16))
        env.fake.fail_next(200, body={"created": 1, "data": [{"url": url}]})
        err = await env.fails("dall-e-2", quality="standard")
        assert err.code == "upstream_download_refused" and other.requests == []


async def test_a_redirect_to_another_origin_is_not_replayed(env: Env) -> None:
    async with FakeOpenAI(api_key=KEY) as other:
        location = f"{other.base_url}/images/generations"
        env.fake.fail_next(307, body="", headers={"Location": location})
        err = await env.fails("gpt-image-1.5")
        assert isinstance(err, ProviderUnavailable) and err.retryable
        assert err.code == "upstream_redirect_refused" and str(other.port) in err.message
        assert other.requests == []  # the POST (and the key) never reached it


async def test_a_redirect_within_the_origin_is_followed(env: Env) -> None:
    env.fake.fail_next(307, body="", headers={"Location": "/v1/images/generations?again=1"})
    result = await env.run("gpt-image-1.5")
    assert len(result.images) == 1 and env.fake.calls["POST /v1/images/generations"] == 2
