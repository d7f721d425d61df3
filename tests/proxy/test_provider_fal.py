"""The fal.ai queue adapter against `FakeFal` (plain HTTP: no SDK to drive), and the download
rules every adapter shares (`proxy.providers.downloads`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from policies.errors import ProviderError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from policies.models import ImageRequest
from proxy.catalog_loader import load_catalog
from proxy.config import ProviderSettings, Secret
from proxy.ports import ProviderCall
from proxy.providers.downloads import Downloader
from proxy.providers.fal import FalProvider
from tests.fakes import images
from tests.fakes.fal_server import FakeFal

KEY = "fal_imagegate_test_key:0123456789abcdef"
CATALOG = load_catalog()
STATUS = "GET /{owner}/{app}/requests/{id}/status"
RESULT = "GET /{owner}/{app}/requests/{id}"
CANCEL = "PUT /{owner}/{app}/requests/{id}/cancel"


def make_call(n: int = 1, **fields: Any) -> ProviderCall:
    fields = {"prompt": "a red fox", "size": "1024x1024", "quality": "auto", **fields}
    fields.setdefault("output_format", "jpeg")
    request = ImageRequest(operation="generate", model="fal-flux-schnell", **fields)
    return ProviderCall(request, CATALOG.models["fal-flux-schnell"], tuple(range(n)))


class Harness:
    def __init__(self, fake: FakeFal) -> None:
        self.fake = fake
        self.providers: list[FalProvider] = []

    def provider(self, *, transport: bool = False, **kw: Any) -> FalProvider:
        kw.setdefault("api_key", Secret(KEY))
        kw.setdefault("download_hosts", (f"127.0.0.1:{self.fake.port}",))
        kw.setdefault("timeout_seconds", 5.0)
        conf = ProviderSettings(name="fal", kind="fal", base_url=self.fake.base_url, **kw)
        p = FalProvider(
            conf,
            poll_interval=0.01,
            transport=self.fake.delivery_transport() if transport else None,
        )
        self.providers.append(p)
        return p


async def harness(**fake_kw: Any) -> AsyncIterator[Harness]:
    async with FakeFal(api_key=KEY, **fake_kw) as fake:
        h = Harness(fake)
        yield h
        for p in h.providers:
            await p.aclose()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async for value in harness():
        yield value


async def test_queue_round_trip(h: Harness) -> None:
    h.fake.queue_polls(2)
    result = await h.provider().generate(make_call(n=2, size="1536x1024", seed=3))
    assert [images.image_info(i.data)[:3] for i in result.images] == [("jpeg", 1024, 768)] * 2
    assert result.usage is None and result.gpu_seconds is None and result.cost_micros is None
    submit = h.fake.requests[0]
    assert submit.path == "/fal-ai/flux/schnell"
    assert submit.headers["Authorization"] == f"Key {KEY}"
    assert submit.json == {
        "prompt": "a red fox",
        "image_size": "landscape_4_3",
        "num_images": 2,
        "output_format": "jpeg",
        "enable_safety_checker": True,
        "seed": 3,
    }
    assert h.fake.calls[STATUS] == 3 and h.fake.calls[RESULT] == 1
    status_paths = {r.path for r in h.fake.requests_to("/status")}
    assert status_paths == {f"/fal-ai/flux/requests/{next(iter(h.fake.queue))}/status"}
    assert len(h.fake.requests_to("/files/")) == 2


async def test_formats_fal_cannot_make_are_asked_as_png(h: Harness) -> None:
    result = await h.provider().generate(make_call(output_format="webp"))
    assert h.fake.requests[0].json["output_format"] == "png"
    assert images.image_info(result.images[0].data)[0] == "png"


@pytest.mark.parametrize("output", ["data", "https"])
async def test_data_uris_and_https_on_fal_media(output: str) -> None:
    async for h in harness(output=output):
        p = h.provider(transport=True, download_hosts=())  # defaults: fal.media, *.fal.media
        result = await p.generate(make_call())
        assert images.image_info(result.images[0].data)[0] == "jpeg"
        downloads = h.fake.requests_to("/files/")
        assert [r.headers["Host"] for r in downloads] == (
            ["v3.fal.media"] if output == "https" else []
        )
        assert all("Authorization" not in r.headers for r in downloads)


async def test_http_outputs_need_the_host_listed(h: Harness) -> None:
    with pytest.raises(ProviderError) as caught:
        await h.provider(download_hosts=()).generate(make_call())
    assert caught.value.code == "upstream_download_refused"


async def test_timeout_cancels_the_request(h: Harness) -> None:
    h.fake.queue_polls(10_000)
    with pytest.raises(ProviderTimeout):
        await h.provider(timeout_seconds=0.3).generate(make_call())
    assert h.fake.calls[CANCEL] == 1 and h.fake.calls[RESULT] == 0
    assert all(entry.canceled for entry in h.fake.queue.values())


async def test_a_slow_submit_times_out(h: Harness) -> None:
    h.fake.delay_next(0.8, method="POST")
    with pytest.raises(ProviderTimeout):
        await h.provider(timeout_seconds=0.3).generate(make_call())
    assert h.fake.calls[CANCEL] == 0  # no request id yet: nothing to cancel


async def test_queue_urls_on_another_origin_are_not_followed(h: Harness) -> None:
    other = f"http://localhost:{h.fake.port}/fal-ai/flux/requests/r1"
    body = {"request_id": "r1", "status_url": f"{other}/status", "response_url": other}
    h.fake.fail_next(200, body=body, method="POST")
    with pytest.raises(ProviderUnavailable):  # r1 is unknown: its status 404s
        await h.provider().generate(make_call())
    assert all(r.headers["Host"].startswith("127.0.0.1") for r in h.fake.requests)
    assert h.fake.requests[1].path == "/fal-ai/flux/requests/r1/status"


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (401, None, ProviderUnavailable, "upstream_auth_failed"),
        (403, None, ProviderUnavailable, "upstream_auth_failed"),
        (404, None, ProviderUnavailable, "upstream_model_not_found"),
        (
            422,
            {"detail": [{"loc": ["body", "seed"], "msg": "bad", "type": "range"}]},
            ProviderRejected,
            "upstream_rejected",
        ),
        (429, None, ProviderUnavailable, "upstream_rate_limited"),
        (500, None, ProviderUnavailable, "upstream_unavailable"),
        (503, "<html>down</html>", ProviderUnavailable, "upstream_unavailable"),
    ],
)
async def test_submit_errors(
    h: Harness, status: int, body: Any, kind: type[ProviderError], code: str
) -> None:
    h.fake.fail_next(status, body=body, retry_after=4 if status == 429 else None)
    with pytest.raises(ProviderError) as caught:
        await h.provider().generate(make_call())
    err = caught.value
    assert type(err) is kind and err.code == code and len(h.fake.requests) == 1
    assert err.retry_after == (4.0 if status == 429 else None)
    assert KEY not in f"{err} {err!r} {err.__cause__!r} {err.__context__!r}"


async def test_a_wrong_key_never_shows(h: Harness) -> None:
    wrong = "fal_wrong:key-that-must-not-leak"
    with pytest.raises(ProviderUnavailable) as caught:
        await h.provider(api_key=Secret(wrong)).generate(make_call())
    assert h.fake.last.status == 401 and caught.value.code == "upstream_auth_failed"
    assert wrong not in f"{caught.value} {caught.value!r}"


async def test_a_failed_request_falls_back(h: Harness) -> None:
    h.fake.fail_request_next(500, "Runner crashed")
    with pytest.raises(ProviderUnavailable) as caught:
        await h.provider().generate(make_call())
    assert "Runner crashed" in caught.value.message and caught.value.retryable


async def test_content_policy_and_nsfw_flags_are_refusals(h: Harness) -> None:
    h.fake.content_policy_next()
    with pytest.raises(ProviderRejected) as caught:
        await h.provider().generate(make_call())
    assert caught.value.code == "content_policy_violation"
    h.fake.nsfw_next()
    with pytest.raises(ProviderRejected) as caught:
        await h.provider().generate(make_call())
    assert caught.value.code == "content_policy_violation"
    assert h.fake.calls["GET /files/{name}"] == 0  # flagged images are not even fetched


async def test_too_many_images_is_the_callers_job(h: Harness) -> None:
    with pytest.raises(ProviderRejected):
        await h.provider().generate(make_call(n=5))
    assert h.fake.requests == []


async def test_credentials() -> None:
    ready = FalProvider(ProviderSettings(name="fal", kind="fal", api_key=Secret(KEY)))
    missing = FalProvider(ProviderSettings(name="fal", kind="fal"))
    assert ready.has_credentials() and not missing.has_credentials()
    await ready.aclose()
    await missing.aclose()


PUBLIC_RULE = "not a public address"
UNLISTED = "not in download_hosts"


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://fal.media/a.png", None),
        ("https://v3.fal.media/a.png", None),
        ("https://V3.FAL.media./a.png", None),
        ("https://evilfal.media/a.png", UNLISTED),
        ("https://fal.media.evil.com/a.png", UNLISTED),
        ("https://fal.media:8443/a.png", UNLISTED),  # the port is part of the entry
        ("http://v3.fal.media/a.png", "plain http"),  # http needs an exact entry
        ("https://user:pw@fal.media/a.png", "credentials"),
        ("ftp://fal.media/a.png", "not http(s)"),
        # Non-public addresses whose host IS on the list (by a wildcard): only the non-public
        # rule refuses them. IPv6 ranges, which no wildcard matches, are covered by names
        # resolving to them (tests/proxy/test_downloads.py).
        ("https://169.254.169.254/latest", PUBLIC_RULE),  # link-local (cloud metadata)
        ("https://127.0.0.1/a.png", PUBLIC_RULE),  # loopback
        ("https://[::ffff:127.0.0.1]/a.png", PUBLIC_RULE),  # IPv4-mapped IPv6 loopback
        ("https://10.0.0.5/a.png", PUBLIC_RULE),  # 10/8
        ("https://172.16.0.9/a.png", PUBLIC_RULE),  # 172.16/12
        ("https://192.168.1.1/a.png", PUBLIC_RULE),  # 192.168/16
        ("https://100.64.0.1/a.png", PUBLIC_RULE),  # shared address space
        ("https://10.0.0.9/a.png", None),  # listed exactly: the operator's choice
        ("http://10.0.0.9/a.png", None),
        ("https://10.0.0.9:8443/a.png", UNLISTED),
    ],
)
async def test_download_rules(url: str, refusal: str | None) -> None:
    hosts = ("fal.media", "*.fal.media", "10.0.0.9", "*.0.0.5", "*.254.169.254", "*.0.0.1")
    hosts += ("*.16.0.9", "*.168.1.1", "*.64.0.1")
    downloader = Downloader("fal", hosts, max_bytes=1024, timeout=1)
    try:
        if refusal is None:
            downloader.check(httpx.URL(url))
        else:
            with pytest.raises(ProviderError, match="will not fetch") as caught:
                downloader.check(httpx.URL(url))
            assert refusal in caught.value.message
    finally:
        await downloader.aclose()


async def test_a_redirect_from_the_queue_is_not_followed(h: Harness) -> None:
    async with FakeFal(api_key=KEY) as other:
        location = f"{other.base_url}/fal-ai/flux/schnell"
        h.fake.fail_next(307, body="", headers={"Location": location}, method="POST")
        with pytest.raises(ProviderUnavailable) as caught:
            await h.provider().generate(make_call())
        assert caught.value.code == "upstream_redirect_refused" and other.requests == []
