"""An answer larger than 256 KiB is written part by part (the base64 of each image as the
store keeps it), not joined into one body first: the SDK gets the same JSON, with its
Content-Length and X-Request-Id, from the stores and from the memo alike."""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from io import BytesIO

import aiohttp
import pytest
from PIL import Image

from policies.models import GeneratedImage
from proxy.ports import ProviderCall, ProviderResult
from tests.conftest import CountingProvider, Gateway, start_gateway

SIZE = 512  # noise at 512x512 is a ~790 KB PNG: its base64 is over 1 MB


def noise_png(seed: int, side: int = SIZE) -> bytes:
    pixels = random.Random(seed).randbytes(side * side * 3)
    out = BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


@dataclass
class NoiseProvider(CountingProvider):
    """Images no compressor can shrink, one per index, square at the size asked."""

    async def generate(self, call: ProviderCall) -> ProviderResult:
        self.calls.append(call)
        side = int(call.request.size.split("x")[0])
        images = tuple(GeneratedImage(data=noise_png(i, side)) for i in call.indexes)
        return ProviderResult(images=images, cost_micros=0)


@pytest.fixture(params=[0, 128], ids=["memory tier off", "memory tier on"])
async def gateway_of_noise(request, settings, clock) -> AsyncIterator[Gateway]:
    settings = replace(settings, cache=replace(settings.cache, memory_mb=request.param))
    gw = await start_gateway(settings, NoiseProvider(), clock)
    yield gw
    await gw.close()


async def test_a_large_answer_is_the_same_json_from_the_stores_and_the_memo(
    gateway_of_noise: Gateway,
) -> None:
    ask = {"model": "dall-e-2", "prompt": "static", "size": f"{SIZE}x{SIZE}", "n": 2}
    client = gateway_of_noise.client()
    answers = []
    for _ in range(3):  # the miss, a hit from the stores, then (memory tier on) the memo
        raw = await client.images.with_raw_response.generate(**ask, response_format="b64_json")
        answers.append((raw.headers, raw.http_response.content, raw.parse()))
    assert [h["x-cache"] for h, _, _ in answers] == ["MISS", "HIT", "HIT"]
    for headers, body, parsed in answers:
        assert int(headers["content-length"]) == len(body) > 2 * 1024 * 1024
        assert headers["x-request-id"].startswith("req_")
        images = [base64.b64decode(d.b64_json) for d in parsed.data]
        assert images == [noise_png(0), noise_png(1)]
    assert len({h["x-request-id"] for h, _, _ in answers}) == 3
    assert answers[1][2].data == answers[0][2].data


async def test_a_large_answer_streamed_as_events_names_its_request(
    gateway_of_noise: Gateway,
) -> None:
    body = {"model": "gpt-image-1", "prompt": "static", "size": "1024x1024", "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway_of_noise.base_url + "/images/generations", json=body) as got:
            text = await got.text()
            assert got.status == 200, text
            assert got.headers["X-Request-Id"].startswith("req_")
    assert "image_generation.completed" in text
