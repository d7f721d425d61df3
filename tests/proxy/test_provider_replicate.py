"""The Replicate adapter, driven through the real `replicate` SDK against `FakeReplicate`."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from policies.errors import ProviderError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from policies.models import ImageRequest
from proxy.catalog_loader import load_catalog
from proxy.config import ProviderSettings, Secret
from proxy.ports import ProviderCall, ProviderResult
from proxy.providers.replicate import ReplicateProvider
from tests.fakes import images
from tests.fakes.replicate_server import FakeReplicate

TOKEN = "r8_imagegate_test_token_0123456789abcdef"
CATALOG = load_catalog()
PREDICTION = "GET /v1/predictions/{id}"
CANCEL = "POST /v1/predictions/{id}/cancel"


def local(fake: FakeReplicate) -> tuple[str, ...]:
    """The fake's own origin, as an operator lists a loopback file server (with its port)."""
    return (f"127.0.0.1:{fake.port}",)


def make_call(
    model: str, operation: str = "generate", *, n: int = 1, **fields: Any
) -> ProviderCall:
    files = fields.pop("uploads", {})
    fields = {"prompt": "a red fox", "size": "1024x1024", "quality": "auto", **fields}
    fields.setdefault("output_format", "png")
    request = ImageRequest(operation=operation, model=model, **fields)  # type: ignore[arg-type]
    return ProviderCall(request, CATALOG.models[model], tuple(range(n)), files)


class Harness:
    """A fake, and providers against it (closed after the test). `using`: provider settings."""

    def __init__(self, fake: FakeReplicate) -> None:
        self.fake = fake
        self.providers: list[ReplicateProvider] = []

    def provider(self, base_url: str | None = None, **kw: Any) -> ReplicateProvider:
        transport = self.fake.delivery_transport() if kw.pop("transport", False) else None
        kw = {"api_key": Secret(TOKEN), "timeout_seconds": 5.0, **kw}
        conf = ProviderSettings(
            "replicate", "replicate", base_url=base_url or self.fake.base_url, **kw
        )
        p = ReplicateProvider(conf, transport=transport, poll_interval=0.01)
        self.providers.append(p)
        return p

    async def run(self, model: str, *args: Any, using: Any = None, **kw: Any) -> ProviderResult:
        return await self.provider(**(using or {})).generate(make_call(model, *args, **kw))

    async def fails(self, model: str, *args: Any, **kw: Any) -> ProviderError:
        with pytest.raises(ProviderError) as caught:
            await self.run(model, *args, **kw)
        return caught.value


async def harness(**fake_kw: Any) -> AsyncIterator[Harness]:
    async with FakeReplicate(api_token=TOKEN, **fake_kw) as fake:
        h = Harness(fake)
        yield h
        for p in h.providers:
            await p.aclose()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async for value in harness():
        yield value


@pytest.fixture
async def http_h() -> AsyncIterator[Harness]:
    async for value in harness(output="http"):
        yield value


# -- inputs and outputs ----------------------------------------------------------------------
async def test_flux_schnell_num_outputs_jpg_and_gpu_seconds(h: Harness) -> None:
    result = await h.run("flux-schnell", n=2, size="1536x1024", output_format="jpeg", seed=7)
    assert [images.image_info(i.data)[:3] for i in result.images] == [("jpeg", 1216, 832)] * 2
    assert result.gpu_seconds == pytest.approx(1.2) and result.usage is None
    rec = h.fake.requests[0]
    assert rec.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert rec.headers["Authorization"] == f"Bearer {TOKEN}"
    assert rec.headers["Prefer"] == "wait=4"  # below timeout_seconds=5
    expected = {"prompt": "a red fox", "aspect_ratio": "3:2", "output_format": "jpg"}
    assert rec.json == {"input": {**expected, "num_outputs": 2, "seed": 7}}


async def test_flux_pro_sends_its_safety_knob_and_no_num_outputs(h: Harness) -> None:
    result = await h.run("flux-1.1-pro", output_format="webp")
    assert images.image_info(result.images[0].data)[:3] == ("webp", 1024, 1024)
    expected = {"prompt": "a red fox", "aspect_ratio": "1:1", "output_format": "webp"}
    assert h.fake.last.json["input"] == {**expected, "safety_tolerance": 2}


async def test_single_format_model_gets_no_output_format(h: Harness) -> None:
    result = await h.run("ideogram-v2", output_format="jpeg")
    assert images.image_info(result.images[0].data)[0] == "png"  # the gateway converts
    assert "output_format" not in h.fake.last.json["input"]


async def test_unmakeable_format_asks_png_and_compression_maps_to_quality(h: Harness) -> None:
    await h.run("flux-dev", output_format="gif")
    assert h.fake.last.json["input"]["output_format"] == "png"
    await h.run("flux-dev", output_format="webp", output_compression=55)
    assert h.fake.last.json["input"]["output_quality"] == 55


async def test_edit_sends_a_data_uri(h: Harness) -> None:
    png = images.make_png(32, 32)
    key = hashlib.sha256(png).hexdigest()
    await h.run("flux-dev", "edit", images=(key,), uploads={key: png})
    assert h.fake.last.json["input"]["image"].startswith("data:image/png;base64,iVBOR")


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("flux-1.1-pro", {"n": 2}),  # more than max_per_call: the caller fans out
        ("flux-schnell", {"n": 5}),
        ("flux-schnell", {"operation": "variation", "prompt": None}),
        ("flux-schnell", {"size": "256x512"}),
    ],
)
async def test_calls_it_cannot_make_are_rejected_before_any_request(
    h: Harness, model: str, fields: dict[str, Any]
) -> None:
    assert isinstance(await h.fails(model, **fields), ProviderRejected)
    assert h.fake.requests == []


# -- the prediction's lifecycle --------------------------------------------------------------
async def test_polls_until_final(h: Harness) -> None:
    h.fake.processing_then_succeed(polls=2)
    assert len((await h.run("flux-schnell")).images) == 1
    assert h.fake.calls[PREDICTION] == 3


async def test_processing_with_output_is_not_final() -> None:
    async for h in harness(sync_status="processing"):
        assert len((await h.run("flux-schnell")).images) == 1
        assert h.fake.requests[0].status == 201 and h.fake.calls[PREDICTION] == 1


async def test_timeout_cancels_the_prediction(h: Harness) -> None:
    h.fake.processing_then_succeed(polls=10_000)
    err = await h.fails("flux-schnell", using={"timeout_seconds": 0.4})
    assert isinstance(err, ProviderTimeout) and "cancelled" in err.message
    assert "Prefer" not in h.fake.requests[0].headers  # under 2 s: no blocking create
    assert h.fake.calls[CANCEL] == 1
    assert [p.status for p in h.fake.predictions.values()] == ["canceled"]


async def test_a_slow_create_times_out(h: Harness) -> None:
    h.fake.delay_next(0.8, method="POST")
    err = await h.fails("flux-schnell", using={"timeout_seconds": 0.3})
    assert isinstance(err, ProviderTimeout)


async def test_failed_prediction_falls_back(h: Harness) -> None:
    h.fake.fail_prediction_next("CUDA out of memory")
    err = await h.fails("flux-schnell")
    assert isinstance(err, ProviderUnavailable) and err.retryable
    assert err.code == "upstream_prediction_failed" and "CUDA out of memory" in err.message


async def test_nsfw_failure_is_a_content_policy_violation(h: Harness) -> None:
    h.fake.fail_prediction_next("NSFW content detected. Try a different prompt.")
    err = await h.fails("flux-schnell")
    assert isinstance(err, ProviderRejected) and err.status_hint == 400
    assert err.code == "content_policy_violation"


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, ProviderRejected, "upstream_rejected"),
        (401, ProviderUnavailable, "upstream_auth_failed"),
        (403, ProviderUnavailable, "upstream_auth_failed"),
        (404, ProviderUnavailable, "upstream_model_not_found"),
        (422, ProviderRejected, "upstream_rejected"),
        (429, ProviderUnavailable, "upstream_rate_limited"),
        (500, ProviderUnavailable, "upstream_unavailable"),
        (503, ProviderUnavailable, "upstream_unavailable"),
    ],
)
async def test_create_errors_map_by_status(
    h: Harness, status: int, kind: type[ProviderError], code: str
) -> None:
    h.fake.fail_next(status, retry_after=7 if status == 429 else None)
    err = await h.fails("flux-schnell")
    assert type(err) is kind and err.code == code and len(h.fake.requests) == 1
    assert err.retry_after == (7.0 if status == 429 else None)
    assert TOKEN not in f"{err} {err.message!r} {err!r} {err.__cause__!r} {err.__context__!r}"


async def test_a_throttled_poll_is_not_retried_by_the_sdk(h: Harness) -> None:
    h.fake.processing_then_succeed(polls=5)
    h.fake.fail_next(503, retry_after=30, method="GET", path="/v1/predictions/")
    err = await h.fails("flux-schnell")
    assert isinstance(err, ProviderUnavailable) and err.retry_after == 30.0
    assert h.fake.calls[PREDICTION] == 1  # the SDK did not retry it


async def test_a_wrong_token_never_shows(h: Harness) -> None:
    wrong = "r8_wrong_token_that_must_not_leak_99"
    err = await h.fails("flux-schnell", using={"api_key": Secret(wrong)})
    assert h.fake.last.status == 401 and err.code == "upstream_auth_failed"
    assert wrong not in f"{err} {err!r}"


async def test_unreachable_server(h: Harness) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderUnavailable):
        await h.provider(f"http://127.0.0.1:{port}").generate(make_call("flux-schnell"))


async def test_credentials(h: Harness) -> None:
    assert h.provider().has_credentials()
    assert not h.provider(api_key=Secret("")).has_credentials()
    assert not h.provider(enabled=False).has_credentials()


# -- downloads -------------------------------------------------------------------------------
async def test_https_outputs_come_from_the_delivery_host_without_the_token() -> None:
    async for h in harness(output="https"):
        assert len((await h.run("flux-schnell", n=2, using={"transport": True})).images) == 2
        downloads = h.fake.requests_to("/files/")
        assert [r.headers["Host"] for r in downloads] == ["replicate.delivery"] * 2
        assert all("Authorization" not in r.headers for r in downloads)


async def test_a_host_off_the_list_is_refused() -> None:
    async for h in harness(output="https"):
        using = {"transport": True, "download_hosts": ("*.example.com",)}
        err = await h.fails("flux-schnell", using=using)
        assert err.code == "upstream_download_refused" and err.retryable
        assert h.fake.requests_to("/files/") == []


async def test_http_needs_the_exact_host_listed(http_h: Harness) -> None:
    assert (
        len((await http_h.run("sd-3.5-large", using={"download_hosts": local(http_h.fake)})).images)
        == 1
    )
    err = await http_h.fails("sd-3.5-large")  # default hosts: replicate.delivery
    assert err.code == "upstream_download_refused"


async def test_redirects_are_rechecked(http_h: Harness) -> None:
    fake = http_h.fake
    using = {"download_hosts": local(fake)}
    fake.redirect_download_to(f"{fake.origin}/files/")  # the same host: followed
    assert len((await http_h.run("flux-dev", using=using)).images) == 1
    fake.redirect_download_to(f"http://localhost:{fake.port}/files/")  # another host
    err = await http_h.fails("flux-dev", using=using)
    assert err.code == "upstream_download_refused" and "localhost" in err.message
    fake.reset()
    fake.redirect_download_to(f"{fake.origin}/files/", times=10)  # a loop
    err = await http_h.fails("flux-dev", using=using)
    assert "redirects" in err.message and len(fake.requests_to("/files/")) == 4


@pytest.mark.parametrize("output", ["data", "http"])
async def test_the_size_cap(output: str) -> None:
    async for h in harness(output=output):
        err = await h.fails(
            "flux-schnell", using={"download_hosts": local(h.fake), "max_image_mb": 0}
        )
        assert err.code == "upstream_image_too_large"


async def test_an_abandoned_call_cancels_its_prediction(h: Harness) -> None:
    """A shutdown cancels the gateway's task; the prediction must not run on upstream."""
    h.fake.processing_then_succeed(polls=10_000)
    task = asyncio.ensure_future(h.run("flux-schnell"))
    for _ in range(500):  # until the prediction exists and is being polled
        if h.fake.calls[PREDICTION] >= 2:
            break
        await asyncio.sleep(0.01)
    assert h.fake.calls[PREDICTION] >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.fake.calls[CANCEL] == 1
    assert [p.status for p in h.fake.predictions.values()] == ["canceled"]


async def test_a_redirect_to_another_origin_is_not_replayed(h: Harness) -> None:
    async with FakeReplicate(api_token=TOKEN) as other:
        location = f"{other.base_url}/v1/models/black-forest-labs/flux-schnell/predictions"
        h.fake.fail_next(307, body="", headers={"Location": location}, method="POST")
        err = await h.fails("flux-schnell")
        assert isinstance(err, ProviderUnavailable) and err.code == "upstream_redirect_refused"
        assert other.requests == []
