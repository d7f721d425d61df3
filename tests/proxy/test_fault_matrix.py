"""The fault matrix: each upstream fault x each provider, end to end.

The client is the official openai SDK against a real gateway; the gateway's adapters drive the
fake upstreams (tests/fakes) through the openai and replicate SDKs and fal's queue over HTTP.
For every cell: what the client gets (status, error code, Retry-After), that nothing was
cached (a follow-up `Cache-Control: only-if-cached` is 504) and what was charged (nothing for
a failed call). Image faults the gateway can repair (a wrong size or format) are served, and
what is cached is the repaired image. RELIABILITY-fault-matrix.md is this table in prose.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from proxy.app import create_app
from proxy.config import ProviderSettings, RoutingSettings, Secret, Settings
from tests.conftest import ledger_of
from tests.fakes import images
from tests.fakes.base import FakeServer
from tests.fakes.fal_server import FakeFal
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replicate_server import FakeReplicate

TIMEOUT = 1.0  # the providers' timeout_seconds: every timeout cell ends within it


@dataclass(frozen=True)
class Upstream:
    """One provider column: its fake, the model the client pins, the API call's path."""

    kind: str
    model: str
    api_path: str
    make: Callable[[], FakeServer]
    quality: str = "auto"


UPSTREAMS = {
    "openai": Upstream(
        "openai", "gpt-image-1-mini", "/v1/images/generations", lambda: FakeOpenAI(), "low"
    ),
    "replicate": Upstream(
        "replicate",
        "flux-schnell",
        "/predictions",
        lambda: FakeReplicate(api_token="r8_test", output="http"),
    ),
    "fal": Upstream("fal", "fal-flux-schnell", "/fal-ai/", lambda: FakeFal(api_key="fal_test")),
}
KEYS = {"openai": "sk-test", "replicate": "r8_test", "fal": "fal_test"}


@dataclass
class Cell:
    fake: FakeServer
    other: FakeServer  # another origin (a redirect target that must never be reached)
    upstream: Upstream
    gateway: TestServer

    @property
    def base_url(self) -> str:
        return str(self.gateway.make_url("/v1"))

    def spent_micros(self) -> int:
        rows = ledger_of(self.gateway.app).spend_by("model")
        return sum(int(r["spend_micros"]) for r in rows)


def provider_settings(upstream: Upstream, fake: FakeServer) -> ProviderSettings:
    return ProviderSettings(
        name=upstream.kind,
        kind=upstream.kind,
        api_key=Secret(KEYS[upstream.kind]),
        base_url=getattr(fake, "base_url", fake.origin),
        timeout_seconds=TIMEOUT,
        # The fake's origin, and the metadata range by a wildcard: only the non-public rule
        # can refuse a redirect there.
        download_hosts=(f"127.0.0.1:{fake.port}", "*.254.169.254"),
        max_image_mb=1,
    )


@pytest.fixture(params=list(UPSTREAMS))
async def cell(request: Any, settings: Settings, clock: Any) -> AsyncIterator[Cell]:
    upstream = UPSTREAMS[request.param]
    async with upstream.make() as fake, FakeOpenAI() as other:
        conf = provider_settings(upstream, fake)
        routing = replace(RoutingSettings(), max_attempts=1)
        app = create_app(
            replace(settings, providers={upstream.kind: conf}, routing=routing), clock=clock
        )
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            yield Cell(fake, other, upstream, server)
        finally:
            await server.close()


# -- the faults: each scripts the fake for one request ---------------------------------------
def _api(cell: Cell) -> dict[str, Any]:
    return {"path": cell.upstream.api_path, "method": "POST"}


def _url_answer(cell: Cell) -> None:
    """OpenAI answers with a `url` on its own origin (so download faults apply to it too)."""
    if cell.upstream.kind == "openai":
        url = cell.fake.store_file("img.png", images.make_png(1024, 1024))
        cell.fake.fail_next(200, body={"created": 1, "data": [{"url": url}]}, **_api(cell))


def _download(cell: Cell) -> dict[str, Any]:
    _url_answer(cell)
    return {"path": "/files/"}


def _redirect_download(cell: Cell, target: str) -> None:
    _url_answer(cell)
    cell.fake.redirect_download_to(target)


FAULTS: dict[str, Callable[[Cell], None]] = {
    "429 + Retry-After": lambda c: c.fake.fail_next(429, retry_after=7, **_api(c)),
    "429": lambda c: c.fake.fail_next(429, **_api(c)),
    "500": lambda c: c.fake.fail_next(500, **_api(c)),
    "502": lambda c: c.fake.fail_next(502, body="<html>bad gateway</html>", **_api(c)),
    "503": lambda c: c.fake.fail_next(503, **_api(c)),
    "timeout before headers": lambda c: c.fake.delay_next(1.5 * TIMEOUT, **_api(c)),
    "timeout mid-body": lambda c: c.fake.spoil_next("stall", seconds=1.5 * TIMEOUT, **_api(c)),
    "connection reset": lambda c: c.fake.spoil_next("reset", **_api(c)),
    "slow drip": lambda c: c.fake.spoil_next("drip", seconds=0.2, **_api(c)),
    "truncated answer": lambda c: c.fake.spoil_next("truncate", **_api(c)),
    "HTML page with 200": lambda c: c.fake.fail_next(
        200, body="<html><body>Maintenance</body></html>", **_api(c)
    ),
    "redirect to another origin": lambda c: c.fake.fail_next(
        307, body="", headers={"Location": f"{c.other.origin}/v1/images/generations"}, **_api(c)
    ),
    "truncated image": lambda c: c.fake.next_image(truncated=True),
    "corrupt image": lambda c: c.fake.next_image(corrupt=True),
    "download redirect to a private address": lambda c: _redirect_download(
        c, "https://169.254.169.254/latest/meta-data/"
    ),
    "download redirect to another origin": lambda c: _redirect_download(
        c, f"{c.other.origin}/files/"
    ),
    "download slow drip": lambda c: c.fake.spoil_next("drip", seconds=0.2, **_download(c)),
    "download huge body": lambda c: c.fake.spoil_next(
        "oversize", size=2 * 1024 * 1024, **_download(c)
    ),
    "wrong size": lambda c: c.fake.next_image(wrong_size=(64, 64)),
    "wrong format": lambda c: c.fake.next_image(wrong_format="jpeg"),
}


# -- what each cell must give -----------------------------------------------------------
FAILED = {  # fault -> (status, error code) the client gets, for every provider
    "429 + Retry-After": (503, "upstream_rate_limited"),
    "429": (503, "upstream_rate_limited"),
    "500": (503, "upstream_unavailable"),
    "502": (503, "upstream_unavailable"),
    "503": (503, "upstream_unavailable"),
    "timeout before headers": (504, "upstream_timeout"),
    "timeout mid-body": (504, "upstream_timeout"),
    "connection reset": (503, "upstream_unavailable"),
    "slow drip": (504, "upstream_timeout"),
    "truncated answer": (503, "upstream_unavailable"),
    "HTML page with 200": (502, "invalid_output"),
    "redirect to another origin": (503, "upstream_redirect_refused"),
    "truncated image": (502, "invalid_output"),
    "corrupt image": (502, "invalid_output"),
    "download redirect to a private address": (502, "upstream_download_refused"),
    "download redirect to another origin": (502, "upstream_download_refused"),
    "download slow drip": (504, "upstream_timeout"),
    "download huge body": (502, "upstream_image_too_large"),
    "wrong size": (502, "invalid_output"),  # GPT image sizes are exact: not repaired
}
# Repaired and served: a wrong format is converted; a wrong size is resized where the model
# is an aspect-ratio model (Replicate, fal), refused where the size is exact (GPT image).
SERVED = {"wrong format": {"openai", "replicate", "fal"}, "wrong size": {"replicate", "fal"}}
RETRY_AFTER = {"429 + Retry-After": "7"}


@dataclass(frozen=True)
class Answer:
    status: int
    code: str | None  # the error code; None when served
    retry_after: str | None
    image: Image.Image | None
    cost_micros: int  # X-Imagegate-Cost-USD, in micro-USD
    message: str = ""
    should_retry: str | None = None  # x-should-retry


async def ask(cell: Cell, **headers: str) -> Answer:
    """One generation through the official SDK (no SDK retries)."""
    async with openai.AsyncOpenAI(base_url=cell.base_url, api_key="sk-x", max_retries=0) as c:
        try:
            raw = await c.images.with_raw_response.generate(
                model=cell.upstream.model,
                prompt="a red fox",
                size="1024x1024",
                quality=cell.upstream.quality,  # type: ignore[arg-type]
                extra_headers=headers or None,
            )
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            retry_after = exc.response.headers.get("retry-after")
            message = str(body.get("message", ""))
            should_retry = exc.response.headers.get("x-should-retry")
            return Answer(
                exc.status_code, body.get("code"), retry_after, None, 0, message, should_retry
            )
    data = base64.b64decode(raw.parse().data[0].b64_json or "")
    image = Image.open(io.BytesIO(data))
    image.load()  # a bad image raises here
    cost = round(float(raw.headers["x-imagegate-cost-usd"]) * 1_000_000)
    return Answer(raw.status_code, None, None, image, cost)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_cell(cell: Cell, fault: str) -> None:
    FAULTS[fault](cell)
    got = await ask(cell)
    again = await ask(cell, **{"Cache-Control": "only-if-cached"})
    assert cell.other.requests == []  # another origin is never contacted
    if cell.upstream.kind in SERVED.get(fault, ()):
        assert (got.status, got.code) == (200, None)
        assert got.image is not None and got.image.format == "PNG"
        assert got.image.size == (1024, 1024)  # what was asked, not what came
        assert got.cost_micros > 0 and cell.spent_micros() == got.cost_micros
        # What is cached is the repaired image, served again for $0.
        assert again.status == 200 and again.image is not None
        assert (again.image.format, again.image.size) == ("PNG", (1024, 1024))
        assert again.cost_micros == 0 and cell.spent_micros() == got.cost_micros
        return
    assert (got.status, got.code) == FAILED[fault], got.message
    assert got.should_retry != "false"  # an upstream fault: worth a retry or a fallback
    assert got.retry_after == RETRY_AFTER.get(fault)
    assert (again.status, again.code) == (504, "not_cached")  # nothing cached
    assert cell.spent_micros() == 0  # nothing charged


async def test_a_second_request_inside_retry_after_says_so(cell: Cell) -> None:
    """The upstream's 429 asked for 7 s: a request inside them is not sent upstream but
    answered 503 provider_waiting with the wait left, never as an open circuit."""
    FAULTS["429 + Retry-After"](cell)
    first = await ask(cell)
    assert first.retry_after == "7"
    calls = len(cell.fake.requests)
    second = await ask(cell)  # the gateway's clock has not moved: 7 s still to wait
    assert (second.status, second.code) == (503, "provider_waiting"), second.message
    assert "circuit" not in second.message
    assert second.retry_after == "7"
    assert second.should_retry == "true"
    assert len(cell.fake.requests) == calls  # not sent upstream
    assert cell.spent_micros() == 0


FALLBACK_FAULTS = ["500", "timeout before headers", "connection reset", "corrupt image"]


@pytest.mark.parametrize("fault", FALLBACK_FAULTS)
async def test_a_fallback_serves_and_only_it_is_charged(
    settings: Settings, clock: Any, fault: str
) -> None:
    """Replicate (the cheapest for `auto`) fails; fal serves; the bill is fal's alone."""
    rep_up, fal_up = UPSTREAMS["replicate"], UPSTREAMS["fal"]
    async with rep_up.make() as rep, fal_up.make() as fal, FakeOpenAI() as other:
        providers = {
            "replicate": provider_settings(rep_up, rep),
            "fal": provider_settings(fal_up, fal),
        }
        app = create_app(replace(settings, providers=providers), clock=clock)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            cell = Cell(rep, other, replace(rep_up, model="auto"), server)
            FAULTS[fault](cell)
            async with openai.AsyncOpenAI(
                base_url=cell.base_url, api_key="sk-x", max_retries=0
            ) as client:
                raw = await client.images.with_raw_response.generate(
                    model="auto", prompt="a red fox", size="1024x1024"
                )
            assert raw.headers["x-imagegate-provider"] == "fal"
            cost = round(float(raw.headers["x-imagegate-cost-usd"]) * 1_000_000)
            assert cost > 0 and cell.spent_micros() == cost  # the failed attempt: $0
            rows = ledger_of(server.app).spend_by("model")
            assert {r["model"] for r in rows if int(r["spend_micros"])} == {
                raw.headers["x-imagegate-model"]
            }
            assert len(rep.requests_to(rep_up.api_path, "POST")) == 1
        finally:
            await server.close()
