"""The fakes, driven by the real `openai` SDK (Replicate: see test_fakes_replicate.py).

Each test checks that the SDK sees what it would see from production (WIRE.md §1).
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from PIL import Image

from tests.fakes import images
from tests.fakes.openai_models import OUTPUT_TOKENS
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-test"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0) as c:
        yield c


def decode(b64: str | None) -> tuple[str, int, int, str]:
    assert b64 is not None
    return images.image_info(base64.b64decode(b64))


async def download(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


# -- images helpers ----------------------------------------------------------------------------
def test_image_helpers_make_real_deterministic_images() -> None:
    assert images.image_info(images.make_png(8, 6, (1, 2, 3))) == ("png", 8, 6, "RGB")
    assert images.image_info(images.make_png(4, 4, alpha=True))[3] == "RGBA"
    assert images.image_info(images.make_jpeg(16, 8))[:3] == ("jpeg", 16, 8)
    assert images.image_info(images.make_webp(8, 8))[:3] == ("webp", 8, 8)
    pic = images.render("k", 64, 48)
    assert pic == images.render("k", 64, 48) != images.render("k2", 64, 48)
    assert len(Image.open(io.BytesIO(pic)).convert("RGB").getcolors(1 << 16) or []) > 2
    assert Image.open(io.BytesIO(images.blank(8, 8))).convert("L").getextrema() == (0, 0)
    for broken in (images.corrupt("png"), images.truncate(images.render("k", 256, 256))):
        assert images.sniff_format(broken) == "png" and not images.decodes(broken)


# -- generations ---------------------------------------------------------------------------
async def test_gpt_image_generation(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    prompt = "a lighthouse at dusk"
    raw = await client.images.with_raw_response.generate(
        model="gpt-image-1",
        prompt=prompt,
        n=2,
        size="1536x1024",
        quality="low",
        output_format="webp",
    )
    assert raw.headers["openai-version"] == "2020-10-01"
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert "x-ratelimit-remaining-requests" in raw.headers
    r = raw.parse()
    assert r.data is not None and len(r.data) == 2
    assert [decode(d.b64_json)[:3] for d in r.data] == [("webp", 1536, 1024)] * 2
    assert r.data[0].b64_json != r.data[1].b64_json and r.data[0].url is None
    assert (r.size, r.quality, r.output_format, r.background) == (
        "1536x1024",
        "low",
        "webp",
        "opaque",
    )
    assert r.usage is not None
    text = math.ceil(len(prompt) / 4)
    assert r.usage.input_tokens_details.text_tokens == r.usage.input_tokens == text
    assert r.usage.output_tokens == 2 * OUTPUT_TOKENS["low"]["1536x1024"] == 800
    assert r.usage.total_tokens == text + 800
    again = await client.images.generate(
        model="gpt-image-1", prompt=prompt, size="1536x1024", quality="low", output_format="webp"
    )
    assert again.data and again.data[0].b64_json == r.data[0].b64_json  # deterministic


async def test_null_counts_as_not_given(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    r = await client.images.generate(
        model="gpt-image-1", prompt="x", quality=None, size=None, response_format=None
    )
    assert fake.last.json == {
        "model": "gpt-image-1",
        "prompt": "x",
        "quality": None,
        "size": None,
        "response_format": None,
    }
    assert (r.size, r.quality, r.background) == ("1024x1024", "high", "opaque")
    assert r.data and decode(r.data[0].b64_json)[:3] == ("png", 1024, 1024)


async def test_transparent_background(client: openai.AsyncOpenAI) -> None:
    r = await client.images.generate(
        model="gpt-image-1-mini",
        prompt="logo",
        size="auto",
        background="transparent",
        output_format="png",
    )
    assert r.background == "transparent" and r.data
    assert decode(r.data[0].b64_json)[3] == "RGBA"


async def test_response_format_rejected_for_gpt_image(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.generate(model="gpt-image-1", prompt="x", response_format="b64_json")
    err = info.value
    assert err.body == {
        "message": "Unknown parameter: 'response_format'.",
        "type": "invalid_request_error",
        "param": "response_format",
        "code": "unknown_parameter",
    }
    assert (err.status_code, err.code, err.param) == (400, "unknown_parameter", "response_format")
    assert err.request_id == fake.request_ids[-1]


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "param"),
    [
        ({"model": "dall-e-3", "size": "512x512"}, 400, "invalid_size", None),
        ({"model": "dall-e-3", "n": 2}, 400, "invalid_value", "n"),
        ({"model": "gpt-image-1", "quality": "hd"}, 400, "invalid_value", "quality"),
        ({"model": "gpt-image-1", "style": "vivid"}, 400, "unknown_parameter", "style"),
        ({"model": "dall-e-2", "output_format": "webp"}, 400, "unknown_parameter", "output_format"),
        ({"model": "gpt-image-1", "extra_body": {"foo": 1}}, 400, "unknown_parameter", "foo"),
        ({"model": "dall-e-2", "prompt": "p" * 1001}, 400, "string_above_max_length", "prompt"),
        ({"model": "no-such-model"}, 404, "model_not_found", None),
    ],
)
async def test_validation_errors(
    client: openai.AsyncOpenAI,
    kwargs: dict[str, object],
    status: int,
    code: str,
    param: str | None,
) -> None:
    args: dict[str, object] = {"prompt": "x", **kwargs}
    with pytest.raises(openai.APIStatusError) as info:
        await client.images.generate(**args)  # type: ignore[call-overload]
    assert (info.value.status_code, info.value.code, info.value.param) == (status, code, param)


async def test_dalle_urls_and_revised_prompt(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    r3 = await client.images.generate(model="dall-e-3", prompt="a fox", size="1792x1024")
    assert r3.data and r3.usage is None and r3.size is None
    item = r3.data[0]
    assert item.b64_json is None and item.url and item.url.startswith(fake.origin + "/files/")
    assert item.revised_prompt and "a fox" in item.revised_prompt
    assert images.image_info(await download(item.url))[:3] == ("png", 1792, 1024)
    r2 = await client.images.generate(
        model="dall-e-2", prompt="a fox", size="256x256", n=2, response_format="b64_json"
    )
    assert r2.data and [decode(d.b64_json)[1:3] for d in r2.data] == [(256, 256)] * 2
    assert r2.data[0].revised_prompt is None


async def test_redirected_download(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    r = await client.images.generate(model="dall-e-2", prompt="x", size="256x256")
    assert r.data and r.data[0].url
    fake.redirect_download_to(f"http://localhost:{fake.port}/files/")
    assert images.image_info(await download(r.data[0].url))[1:3] == (256, 256)
    hops = fake.requests_to("/files/")
    assert [h.status for h in hops] == [302, 200]
    assert hops[1].headers["Host"].startswith("localhost")


# -- edits ---------------------------------------------------------------------------------
async def test_edit_multipart(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    first, second = images.make_png(64, 64, (9, 9, 9)), images.make_jpeg(32, 48)
    r = await client.images.edit(
        model="gpt-image-1",
        prompt="add a hat",
        n=2,
        input_fidelity="high",
        stream=False,
        image=[("a.png", first, "image/png"), ("b.jpg", second, "image/jpeg")],
        mask=("m.png", images.make_mask(64, 64), "image/png"),
        size="1024x1536",
    )
    rec = fake.last
    assert rec.field_names[-3:] == ["image[]", "image[]", "mask"]
    assert (rec.text("n"), rec.text("stream"), rec.text("input_fidelity")) == ("2", "false", "high")
    assert [(f.filename, f.content_type) for f in rec.files] == [
        ("a.png", "image/png"),
        ("b.jpg", "image/jpeg"),
        ("m.png", "image/png"),
    ]
    assert rec.files[0].data == first
    assert r.usage and r.usage.input_tokens_details.image_tokens == 2 * 3050
    assert r.usage.output_tokens == 2 * OUTPUT_TOKENS["high"]["1024x1536"]
    assert r.data and decode(r.data[0].b64_json)[1:3] == (1024, 1536)


async def test_edit_file_rules(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:  # raw bytes -> "upload", octet-stream
        await client.images.edit(model="gpt-image-1", prompt="x", image=images.make_png(8, 8))
    assert (info.value.code, info.value.param) == ("unsupported_file_mimetype", "image")
    assert fake.last.files[0].filename == "upload" and fake.last.field_names[-1] == "image"
    with pytest.raises(openai.BadRequestError) as info:  # dall-e-2 wants alpha without a mask
        await client.images.edit(
            model="dall-e-2", prompt="x", image=("a.png", images.make_png(8, 8), "image/png")
        )
    assert "got RGB" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.edit(
            model="gpt-image-1", prompt="x", image=("a.png", images.corrupt(), "image/png")
        )
    assert info.value.code == "invalid_image_file"
    r = await client.images.edit(
        model="dall-e-2",
        prompt="x",
        size="512x512",
        image=("a.png", images.make_png(8, 8, alpha=True), "image/png"),
    )
    assert r.data and r.data[0].url and r.usage is None


async def test_edit_accepts_octet_stream_when_told() -> None:
    async with (
        FakeOpenAI(api_key=None, accept_octet_stream=True) as fake,
        openai.AsyncOpenAI(base_url=fake.base_url, api_key="any", max_retries=0) as c,
    ):
        r = await c.images.edit(model="gpt-image-1.5", prompt="x", image=images.make_webp(8, 8))
    assert r.usage and r.usage.input_tokens_details.image_tokens == 135


# -- streaming -----------------------------------------------------------------------------
async def test_streaming_generation_and_edit(client: openai.AsyncOpenAI) -> None:
    stream = await client.images.generate(
        model="gpt-image-1", prompt="x", stream=True, partial_images=2, quality="medium"
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"
    ]
    assert [getattr(e, "partial_image_index", None) for e in events] == [0, 1, None]
    done = events[-1]
    assert done.type == "image_generation.completed"
    assert decode(done.b64_json)[:3] == ("png", 1024, 1024)
    assert done.usage.output_tokens == OUTPUT_TOKENS["medium"]["1024x1024"] + 2 * 100
    edit = await client.images.edit(
        model="gpt-image-1",
        prompt="x",
        stream=True,
        image=("a.png", images.make_png(8, 8), "image/png"),
    )
    assert [e.type async for e in edit] == ["image_edit.completed"]


# -- faults, retries, auth -----------------------------------------------------------------
async def test_scripted_failure_and_retry_after_ms(fake: FakeOpenAI) -> None:
    fake.fail_next(500)
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.images.generate(model="gpt-image-1", prompt="x")
    assert info.value.status_code == 500 and info.value.request_id
    assert info.value.type == "server_error"
    fake.reset()
    fake.fail_next(429, times=2, retry_after=0.01)
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=2) as c:
        started = time.monotonic()
        r = await c.images.generate(model="gpt-image-1", prompt="x", quality="low")
        elapsed = time.monotonic() - started
    assert r.data and elapsed < 0.6  # SDK backoff alone would take >= ~1.1 s
    assert [q.status for q in fake.requests] == [429, 429, 200]
    assert [q.headers["x-stainless-retry-count"] for q in fake.requests] == ["0", "1", "2"]
    fake.reset()
    fake.fail_next(400, retry_after=0.01, should_retry=True)  # x-should-retry forces a retry
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=1) as c:
        await c.images.generate(model="gpt-image-1", prompt="x", quality="low")
    assert [q.status for q in fake.requests] == [400, 200]
    fake.reset()
    fake.fail_next(429, retry_after=200)  # > 120 s: openai 3.57 does not retry at all
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=2) as c:
        with pytest.raises(openai.RateLimitError) as rate:
            await c.images.generate(model="gpt-image-1", prompt="x")
    assert rate.value.code == "rate_limit_exceeded" and len(fake.requests) == 1


async def test_custom_fault_body_and_delay(fake: FakeOpenAI) -> None:
    fake.fail_next(503, body="<html>upstream down</html>")
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key=KEY, max_retries=0, timeout=0.05
    ) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.images.generate(model="gpt-image-1", prompt="x")
        assert info.value.code is None and info.value.status_code == 503
        fake.delay_next(0.3)  # delays and failures each take the next matching request
        with pytest.raises(openai.APITimeoutError):
            await c.images.generate(model="gpt-image-1", prompt="x")


async def test_auth(fake: FakeOpenAI) -> None:
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key="sk-wrong-key", max_retries=0
    ) as c:
        with pytest.raises(openai.AuthenticationError) as info:
            await c.images.generate(model="gpt-image-1", prompt="x")
    assert info.value.code == "invalid_api_key" and "sk-wrong-key" not in info.value.message
    assert fake.last.headers["Authorization"] == "Bearer sk-wrong-key"


async def test_image_faults(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.next_image(wrong_size=(512, 512))
    fake.next_image(wrong_format="jpeg")
    fake.next_image(blank=True)
    fake.next_image(corrupt=True)
    fake.next_image(truncated=True)
    r = await client.images.generate(model="gpt-image-1", prompt="x", n=5, quality="low")
    assert r.data is not None
    data = [base64.b64decode(d.b64_json or "") for d in r.data]
    assert images.image_info(data[0])[1:3] == (512, 512)
    assert images.image_info(data[1])[0] == "jpeg"
    assert Image.open(io.BytesIO(data[2])).convert("L").getextrema() == (0, 0)
    assert not images.decodes(data[3]) and not images.decodes(data[4])
    assert fake.outputs == data


async def test_models_endpoint(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini"} <= set(ids)
    model = await client.models.retrieve("gpt-image-1")
    assert (model.id, model.owned_by) == ("gpt-image-1", "system")
    assert "content-type" not in fake.last.headers
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nope")
