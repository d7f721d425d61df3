"""Response bodies use one JSON style: compact separators, whatever the model or mode."""

from __future__ import annotations

import json

import aiohttp
import pytest


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-image-1.5", "prompt": "a red fox", "size": "1024x1024"},
        {"model": "dall-e-3", "prompt": "a red fox", "response_format": "b64_json"},
        {"model": "dall-e-2", "prompt": "a red fox", "size": "256x256"},
    ],
    ids=["gpt-image", "dall-e-3", "dall-e-2 url"],
)
async def test_images_response_is_compact_json(gateway, body):
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # the miss, then the hit (rendered once and kept)
            async with http.post(gateway.base_url + "/images/generations", json=body) as got:
                assert got.status == 200, await got.text()
                raw = await got.read()
            assert raw == compact(json.loads(raw))


async def test_streamed_events_are_compact_json(gateway):
    body = {"model": "gpt-image-1.5", "prompt": "a red fox", "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.base_url + "/images/generations", json=body) as got:
            text = await got.text()
    datas = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert datas
    for data in datas:
        assert data.encode() == compact(json.loads(data))
