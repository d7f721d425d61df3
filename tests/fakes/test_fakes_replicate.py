"""The Replicate fake, driven by the real `replicate` SDK (WIRE.md §3)."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from replicate.client import Client
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from tests.fakes import images
from tests.fakes.replicate_models import ASPECT_RATIOS, MODELS
from tests.fakes.replicate_server import FakeReplicate

TOKEN = "r8_test"
SCHNELL = "black-forest-labs/flux-schnell"


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.01")


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate(api_token=TOKEN) as server:
        yield server


def make_client(fake: FakeReplicate, token: str = TOKEN, **kw: Any) -> Client:
    return Client(api_token=token, base_url=fake.base_url, **kw)


@pytest.fixture
async def client(fake: FakeReplicate) -> AsyncIterator[Client]:
    c = make_client(fake)
    yield c
    await c._async_client.aclose()


async def read(out: object) -> tuple[str, int, int, str]:
    assert isinstance(out, FileOutput)
    return images.image_info(await out.aread())


async def test_async_run_flux_schnell(fake: FakeReplicate, client: Client) -> None:
    out = await client.async_run(
        SCHNELL,
        input={"prompt": "a cat", "num_outputs": 2, "aspect_ratio": "16:9", "output_format": "jpg"},
    )
    assert isinstance(out, list) and len(out) == 2
    assert all(o.url.startswith("data:image/jpeg;base64,") for o in out)
    assert [await read(o) for o in out] == [("jpeg", 1344, 768, "RGB")] * 2
    rec = fake.last
    assert rec.route == "POST /v1/models/{owner}/{name}/predictions"
    assert rec.headers["Authorization"] == f"Bearer {TOKEN}"
    assert rec.headers["Prefer"] == "wait" and rec.status == 201
    assert rec.json == {
        "input": {
            "prompt": "a cat",
            "num_outputs": 2,
            "aspect_ratio": "16:9",
            "output_format": "jpg",
        }
    }
    assert len(fake.requests) == 1  # final state at once: no polling


@pytest.mark.parametrize(
    ("ref", "extra", "expected"),
    [
        ("black-forest-labs/flux-1.1-pro", {"aspect_ratio": "2:3"}, ("webp", 832, 1216)),
        (
            "black-forest-labs/flux-1.1-pro",
            {"aspect_ratio": "custom", "width": 500, "height": 300},
            ("webp", 512, 288),
        ),
        ("ideogram-ai/ideogram-v2", {"aspect_ratio": "3:1"}, ("png", 1536, 512)),
        ("black-forest-labs/flux-dev", {"megapixels": "0.25"}, ("webp", 512, 512)),
    ],
)
async def test_output_shapes_and_sizes(
    client: Client, ref: str, extra: dict[str, object], expected: tuple[str, int, int]
) -> None:
    out: Any = await client.async_run(ref, input={"prompt": "x", **extra})
    first = out[0] if MODELS[ref].list_output else out
    assert isinstance(out, list) == MODELS[ref].list_output
    assert (await read(first))[:3] == expected


async def test_sd35_ignores_num_outputs(fake: FakeReplicate, client: Client) -> None:
    out = await client.async_run(
        "stability-ai/stable-diffusion-3.5-large",
        input={"prompt": "x", "num_outputs": 3, "seed": 7},
    )
    assert isinstance(out, list) and len(out) == 1
    pred = next(iter(fake.predictions.values()))
    assert pred.metrics["image_count"] == 1 and "Using seed: 7" in pred.logs


async def test_version_ref(fake: FakeReplicate, client: Client) -> None:
    version = MODELS[SCHNELL].version
    out = await client.async_run(f"{SCHNELL}:{version}", input={"prompt": "x"})
    assert isinstance(out, list) and (await read(out[0]))[1:3] == ASPECT_RATIOS["1:1"]
    assert [r.route for r in fake.requests] == [
        "POST /v1/predictions",
        "GET /v1/models/{owner}/{name}/versions/{version}",
    ]
    assert fake.requests[0].json == {"version": version, "input": {"prompt": "x"}}
    model = await client.models.async_get(SCHNELL)
    assert model.latest_version and model.latest_version.id == version
    schema = model.latest_version.openapi_schema["components"]["schemas"]
    assert schema["Input"]["properties"]["output_format"]["enum"] == ["webp", "jpg", "png"]


async def test_create_then_poll(fake: FakeReplicate, client: Client) -> None:
    pred = await client.predictions.async_create(model=SCHNELL, input={"prompt": "x"})
    assert pred.status == "starting" and pred.output is None
    assert "Prefer" not in fake.last.headers
    assert pred.urls is not None and None not in pred.urls.values()
    assert pred.urls["get"] == f"{fake.base_url}/v1/predictions/{pred.id}"
    await pred.async_wait()
    final: str = pred.status  # (a fresh name: mypy narrowed pred.status to "starting")
    assert final == "succeeded" and pred.completed_at and pred.started_at
    metrics = pred.metrics or {}
    assert metrics["predict_time"] == MODELS[SCHNELL].predict_seconds
    assert metrics["image_count"] == 1 and metrics["total_time"] >= 0
    assert fake.calls["GET /v1/predictions/{id}"] == 1


async def test_processing_then_succeed(fake: FakeReplicate, client: Client) -> None:
    fake.processing_then_succeed(polls=2)
    started = time.monotonic()
    out = await client.async_run(SCHNELL, input={"prompt": "x"})
    assert isinstance(out, list) and len(out) == 1
    assert time.monotonic() - started < 2
    polls = fake.requests_to("/v1/predictions/", "GET")
    assert len(polls) == 3 and fake.requests[0].headers["Prefer"] == "wait"


async def test_sync_status_processing_with_output() -> None:
    async with FakeReplicate(sync_status="processing") as fake:
        c = make_client(fake, token="r8_test")
        out = await c.async_run(SCHNELL, input={"prompt": "x"}, wait=5)
        await c._async_client.aclose()
    assert isinstance(out, list) and len(out) == 1
    assert fake.last.headers["Prefer"] == "wait=5" and len(fake.requests) == 1


async def test_wait_window_runs_out() -> None:
    async with FakeReplicate(work_seconds=1.1) as fake:
        c = make_client(fake)
        pred = await c.predictions.async_create(model=SCHNELL, input={"prompt": "x"}, wait=1)
        assert pred.status == "starting"
        await pred.async_wait()
        await c._async_client.aclose()
    final: str = pred.status
    assert final == "succeeded"
    assert fake.calls["GET /v1/predictions/{id}"] >= 1


async def test_failed_prediction(fake: FakeReplicate, client: Client) -> None:
    fake.fail_prediction_next("NSFW content detected")
    with pytest.raises(ModelError) as info:
        await client.async_run("black-forest-labs/flux-dev", input={"prompt": "x"})
    assert str(info.value) == "NSFW content detected"
    assert info.value.prediction.status == "failed" and info.value.prediction.output is None


async def test_input_validation_422(fake: FakeReplicate, client: Client) -> None:
    with pytest.raises(ReplicateError) as info:
        await client.async_run(SCHNELL, input={"prompt": "x", "output_format": "jpeg"})
    assert info.value.status == 422 and info.value.title == "Input validation failed"
    assert info.value.detail and "input.output_format" in info.value.detail
    with pytest.raises(ReplicateError) as info:
        await client.async_run(SCHNELL, input={"num_outputs": 5})
    assert info.value.detail and "prompt is required" in info.value.detail
    assert "num_outputs" in info.value.detail


async def test_auth_problem_json(fake: FakeReplicate) -> None:
    c = make_client(fake, token="r8_wrong")
    with pytest.raises(ReplicateError) as info:
        await c.async_run(SCHNELL, input={"prompt": "x"})
    await c._async_client.aclose()
    assert (info.value.status, info.value.title) == (401, "Unauthenticated")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.base_url}/v1/predictions/x") as resp:
            assert resp.status == 401
            assert resp.content_type == "application/problem+json"
            body = await resp.json(content_type=None)
    assert set(body) == {"title", "detail", "status"}


async def test_post_not_retried_get_retried(fake: FakeReplicate, client: Client) -> None:
    fake.fail_next(429, retry_after=0)
    with pytest.raises(ReplicateError) as info:
        await client.async_run(SCHNELL, input={"prompt": "x"})
    assert info.value.status == 429 and len(fake.requests) == 1
    assert info.value.detail and "throttled" in info.value.detail
    fake.reset()
    fake.processing_then_succeed(polls=1)
    fake.fail_next(503, times=2, retry_after=0, path="/v1/predictions/", method="GET")
    out = await client.async_run(SCHNELL, input={"prompt": "x"})
    assert isinstance(out, list)
    assert [r.status for r in fake.requests_to("/v1/predictions/", "GET")] == [503, 503, 200, 200]


async def test_cancel(fake: FakeReplicate, client: Client) -> None:
    fake.processing_then_succeed(polls=5)
    pred = await client.predictions.async_create(model=SCHNELL, input={"prompt": "x"})
    await pred.async_cancel()
    await pred.async_reload()
    assert pred.status == "canceled" and pred.output is None
    assert fake.calls["POST /v1/predictions/{id}/cancel"] == 1


async def test_https_outputs_through_transport() -> None:
    async with FakeReplicate(output="https") as fake:
        c = make_client(fake, transport=fake.delivery_transport())
        out = await c.async_run("ideogram-ai/ideogram-v2", input={"prompt": "x"})
        assert isinstance(out, FileOutput)
        assert out.url.startswith("https://replicate.delivery/xezq/")
        assert (await read(out))[:3] == ("png", 1024, 1024)
        await c._async_client.aclose()
    download = fake.last
    assert download.path.startswith("/files/xezq/")
    assert download.headers["Host"] == "replicate.delivery"
    assert download.headers["Authorization"] == f"Bearer {TOKEN}"  # the SDK sends its token


async def test_http_outputs_and_download_faults() -> None:
    async with FakeReplicate(output="http") as fake:
        c = make_client(fake)
        fake.next_image(blank=True)
        out = await c.async_run(SCHNELL, input={"prompt": "x", "output_format": "png"})
        await c._async_client.aclose()
        assert isinstance(out, list) and isinstance(out[0], str)  # http: stays a plain str
        assert out[0].startswith(fake.origin + "/files/")
        fake.fail_next(500, path="/files/")
        fake.redirect_download_to(f"http://localhost:{fake.port}/files/")
        async with aiohttp.ClientSession() as session:
            async with session.get(out[0]) as resp:
                assert resp.status == 500
            async with session.get(out[0]) as resp:
                assert resp.status == 200 and resp.url.host == "localhost"
                data = await resp.read()
    assert Image.open(io.BytesIO(data)).convert("L").getextrema() == (0, 0)
    assert [r.status for r in fake.requests_to("/files/")] == [500, 302, 200]
