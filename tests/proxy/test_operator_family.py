"""An operator's own model family, defined only in config.toml, routes and is served end to
end with no code: its fields decide the request rules, the wire dialect and the answers.

The official openai SDK is the client; upstream is the fake OpenAI server (the real openai SDK
talks to it) or the placeholder.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from proxy.app import create_app
from proxy.config import ConfigError, load_settings
from tests.conftest import CountingProvider, Gateway
from tests.fakes.openai_server import FakeOpenAI

COPY = """
[families."acme-image"]
like = "gpt-image"               # the GPT image rules and wire dialect
default_response_format = "url"  # but answer links unless the client asks for b64_json
revises_prompt = true            # and say which prompt was drawn

[models."acme-1"]
provider = "openai"
upstream = "gpt-image-1.5"
family = "acme-image"
strengths = ["art"]
edits = true
price_image = { "*" = 20_000 }
"""

OWN = """
[providers.placeholder]
enabled = true

[families.sketch]                # a family of its own, every required field given
prompt_max = 40
n_max = 2
sizes = ["512x512", "1024x512"]
default_size = "512x512"
qualities = ["draft", "final"]
default_quality = "draft"
max_aspect_ratio = "any"

[models."sketch-1"]
provider = "replicate"
family = "sketch"
strengths = ["art"]
price_image = { "*" = 1_000 }
"""


async def serve(tmp_path: Path, clock, text: str) -> Gateway:
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n{text}', encoding="utf-8")
    settings = load_settings(config, environ={})
    server = TestServer(create_app(settings, clock=clock), host="127.0.0.1")
    await server.start_server()
    return Gateway(server, CountingProvider(), clock)


def size_of(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


async def test_a_copy_of_gpt_image_is_served_by_openai_with_its_own_answers(tmp_path, clock):
    async with FakeOpenAI() as oai:
        provider = f'[providers.openai]\napi_key = "sk-test"\nbase_url = "{oai.base_url}"\n'
        gw = await serve(tmp_path, clock, provider + COPY)
        try:
            client = gw.client()
            raw = await client.images.with_raw_response.generate(
                model="acme-1", prompt="a copper kettle", size="1536x1024", quality="high"
            )
            assert raw.headers["x-imagegate-model"] == "acme-1"
            assert raw.headers["x-imagegate-provider"] == "openai"
            image = raw.parse().data[0]
            assert image.url and image.b64_json is None  # default_response_format
            assert image.revised_prompt == "a copper kettle"  # revises_prompt
            sent = oai.requests_to("/v1/images/generations")[-1].json
            # The GPT dialect (the fake answers 400 to response_format for a GPT model).
            assert sent["model"] == "gpt-image-1.5" and sent["output_format"] == "png"
            assert "response_format" not in sent

            asked = await client.images.generate(
                model="acme-1", prompt="a tin kettle", response_format="b64_json"
            )
            assert asked.data[0].b64_json and asked.data[0].url is None
            with pytest.raises(openai.BadRequestError, match="1792x1024"):
                await client.images.generate(model="acme-1", prompt="x", size="1792x1024")
        finally:
            await gw.close()


async def test_a_family_of_its_own_is_served_by_the_placeholder(tmp_path, clock):
    gw = await serve(tmp_path, clock, OWN)
    try:
        client = gw.client()
        raw = await client.images.with_raw_response.generate(
            model="sketch-1", prompt="a kite", size="1024x512", quality="final", n=2
        )
        assert raw.headers["x-imagegate-model"] == "sketch-1"
        assert raw.headers["x-imagegate-provider"] == "placeholder"
        body = raw.parse()
        assert [size_of(d.b64_json) for d in body.data] == [(1024, 512)] * 2
        assert body.data[0].revised_prompt is None  # revises_prompt unset

        for bad, param in (
            ({"quality": "hd"}, "quality"),
            ({"n": 3}, "n"),
            ({"prompt": "x" * 41}, "prompt"),
            ({"size": "1024x1024"}, "size"),
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                await client.images.generate(**{"model": "sketch-1", "prompt": "a kite", **bad})
            assert caught.value.body["param"] == param
    finally:
        await gw.close()


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('[families.x]\nlike = "gpt-image"\ncolour = "red"\n', "families.x.colour"),
        ('[families.x]\nlike = "virtual"\n', "families.x.like"),
        ('[families.dall-e-3]\nlike = "gpt-image"\n', "families.dall-e-3"),
        (
            '[families.x]\nlike = "gpt-image"\n[models.m]\nfamily = "y"\nprovider = "openai"\n',
            "models.m.family",
        ),
        ("families = 3\n", "families"),
    ],
)
def test_a_bad_family_is_refused_at_start_with_its_path(tmp_path, text, path):
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert caught.value.path == path
