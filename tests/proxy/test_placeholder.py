"""proxy.providers.placeholder: the $0 offline provider draws real, deterministic images."""

from __future__ import annotations

import asyncio
import dataclasses
import xml.etree.ElementTree as ET
from io import BytesIO

import pytest
from PIL import Image, ImageDraw

from policies.catalog import ModelSpec
from policies.errors import ProviderRejected
from policies.models import ImageRequest
from policies.sizes import parse_size
from proxy.imaging import check_output, probe_upload
from proxy.ports import Provider, ProviderCall, ProviderResult
from proxy.providers.placeholder import PlaceholderProvider, render

GPT2 = ModelSpec(name="gpt-image-2", family="gpt-image-2", provider="placeholder", upstream="x")
DALLE2 = ModelSpec(name="dall-e-2", family="dall-e-2", provider="placeholder", upstream="x")
DALLE3 = ModelSpec(name="dall-e-3", family="dall-e-3", provider="placeholder", upstream="x")
SMALL = "256x256"  # keeps the suite fast; sizes get their own tests


def request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        operation="generate",
        model="gpt-image-2",
        prompt="a lighthouse at dusk",
        size=SMALL,
        quality="auto",
        output_format="png",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def call(
    req: ImageRequest | None = None,
    *,
    model: ModelSpec = GPT2,
    indexes: tuple[int, ...] = (0,),
    uploads: dict[str, bytes] | None = None,
) -> ProviderCall:
    return ProviderCall(req or request(), model, indexes, uploads or {})


async def one(req: ImageRequest, *, uploads: dict[str, bytes] | None = None) -> bytes:
    result = await PlaceholderProvider().generate(call(req, uploads=uploads))
    assert len(result.images) == 1
    return result.images[0].data


def checked(data: bytes, req: ImageRequest) -> tuple[int, int]:
    info = check_output(data, expected_format=req.output_format, expected_size=parse_size(req.size))
    return info.width, info.height


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    out = BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def photo(size: tuple[int, int] = (300, 200)) -> Image.Image:
    img = Image.new("RGB", size, (200, 120, 40))
    ImageDraw.Draw(img).ellipse((50, 50, 250, 150), fill=(30, 60, 200))
    return img


def pixel(data: bytes, xy: tuple[int, int]) -> tuple[int, ...]:
    with Image.open(BytesIO(data)) as img:
        value = img.convert("RGBA").getpixel(xy)
    assert isinstance(value, tuple)
    return value


# --- the provider contract ----------------------------------------------------------------


async def test_is_a_free_provider_with_credentials() -> None:
    provider: Provider = PlaceholderProvider()
    assert provider.name == "placeholder"
    assert provider.has_credentials()
    result = await provider.generate(call(indexes=(0, 1, 2)))
    assert isinstance(result, ProviderResult)
    assert result.cost_micros == 0
    assert len(result.images) == 3
    assert all(image.revised_prompt is None for image in result.images)
    await provider.aclose()


async def test_does_not_block_the_event_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await one(request(size="2048x2048"))
    task.cancel()
    assert ticks >= 3


# --- determinism --------------------------------------------------------------------------


async def test_same_call_gives_identical_bytes() -> None:
    req = request(output_format="webp")
    assert await one(req) == await one(req)


async def test_indexes_differ_and_do_not_depend_on_the_batch() -> None:
    provider = PlaceholderProvider()
    batch = await provider.generate(call(indexes=(0, 1, 2)))
    datas = [image.data for image in batch.images]
    assert len(set(datas)) == 3
    alone = await provider.generate(call(indexes=(1,)))
    assert alone.images[0].data == datas[1]


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a lighthouse at dawn"},
        {"model": "chatgpt-image-latest"},
        {"seed": 7},
        {"quality": "high"},
        {"style": "vivid"},
        {"moderation": "low"},
    ],
)
async def test_any_request_field_changes_the_image(change: dict[str, object]) -> None:
    assert await one(request(**change)) != await one(request())


async def test_different_sizes_differ() -> None:
    a, b = await one(request(size="256x512")), await one(request(size="512x256"))
    assert a != b


# --- sizes and formats --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "size"),
    [
        ("png", "1024x1024"),
        ("jpeg", "1536x1024"),
        ("webp", "1024x1536"),
        ("gif", "512x512"),
        ("svg", "1792x1024"),
        ("png", "272x1840"),
    ],
)
async def test_formats_and_sizes_pass_check_output(fmt: str, size: str) -> None:
    req = request(output_format=fmt, size=size)
    assert checked(await one(req), req) == parse_size(size)


async def test_auto_size_is_1024_square() -> None:
    req = request(size="auto")
    data = await one(req)
    assert check_output(data, expected_format="png", expected_size=(1024, 1024))


async def test_4k_is_drawn() -> None:
    req = request(size="3840x2160", output_format="jpeg", prompt="wide " * 50)
    assert checked(await one(req), req) == (3840, 2160)


async def test_absurd_sizes_are_refused() -> None:
    with pytest.raises(ProviderRejected) as caught:
        await one(request(size="20000x20000"))
    assert caught.value.param == "size"


@pytest.mark.parametrize("fmt", ["png", "webp", "gif"])
async def test_transparent_background_has_alpha(fmt: str) -> None:
    data = await one(request(output_format=fmt, background="transparent"))
    assert probe_upload(data, param="image").has_alpha
    assert pixel(data, (0, 0))[3] == 0  # the corner is see-through
    assert pixel(data, (128, 128))[3] == 255


@pytest.mark.parametrize("fmt", ["png", "webp"])
async def test_opaque_background_has_no_alpha(fmt: str) -> None:
    data = await one(request(output_format=fmt, background="opaque"))
    assert not probe_upload(data, param="image").has_alpha


async def test_jpeg_ignores_transparent_background() -> None:
    req = request(output_format="jpeg", background="transparent")
    assert checked(await one(req), req) == (256, 256)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
async def test_output_compression_is_the_quality(fmt: str) -> None:
    low = await one(request(output_format=fmt, output_compression=5))
    high = await one(request(output_format=fmt, output_compression=100))
    assert len(low) < len(high)


async def test_gif_frame_count_and_duration() -> None:
    req = request(output_format="gif", extras=(("frame_count", "4"), ("frame_duration_ms", "40")))
    data = await one(req)
    checked(data, req)
    with Image.open(BytesIO(data)) as img:
        assert getattr(img, "n_frames", 1) == 4
        assert img.info["duration"] == 40
        assert img.info["loop"] == 0


@pytest.mark.parametrize("extras", [(), (("frame_count", '"many"'),), (("frame_count", "{"),)])
async def test_gif_without_a_usable_frame_count_is_one_frame(
    extras: tuple[tuple[str, str], ...],
) -> None:
    with Image.open(BytesIO(await one(request(output_format="gif", extras=extras)))) as img:
        assert getattr(img, "n_frames", 1) == 1


async def test_svg_is_well_formed_and_escapes_the_prompt() -> None:
    prompt = 'Tom & "Jerry" <b>bold</b> </svg> \x00\x07 \ud800 café 世界'
    req = request(output_format="svg", size="512x256", prompt=prompt, background="transparent")
    data = await one(req)
    assert checked(data, req) == (512, 256)
    root = ET.fromstring(data)  # noqa: S314  # our own output, parsed to prove it well formed
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert (root.get("width"), root.get("height")) == ("512", "256")
    assert b"Tom &amp;" in data
    assert b"&lt;b&gt;" in data
    assert "café 世界" in "".join(root.itertext())


@pytest.mark.parametrize(
    "prompt",
    [
        "Crème brûlée — “quoted” ‘x’ … ﬁne",
        "世界 🙂 مرحبا עברית \u200d\u0301",
        "line one\nline two\r\n\ttabbed \x00 nul \ud800 lone surrogate",
        "x" * 5000,
        "word " * 6400,
        "",
        " ",
    ],
)
async def test_any_prompt_draws(prompt: str) -> None:
    req = request(prompt=prompt)
    assert checked(await one(req), req) == (256, 256)


# --- edits and variations -----------------------------------------------------------------


def edit(**changes: object) -> ImageRequest:
    return request(operation="edit", images=("img",), prompt="add a hat", **changes)


async def test_edit_draws_over_the_upload_at_the_output_size() -> None:
    req = edit(size="512x256")
    data = await one(req, uploads={"img": encode(photo())})
    assert checked(data, req) == (512, 256)
    assert data != await one(request(size="512x256", prompt="add a hat"))


async def test_edit_without_mask_tints_everywhere() -> None:
    flat = Image.new("RGB", (256, 256), (200, 120, 40))
    data = await one(edit(), uploads={"img": encode(flat)})
    assert pixel(data, (10, 10))[:3] != (200, 120, 40)
    assert pixel(data, (245, 10))[:3] != (200, 120, 40)


async def test_edit_with_mask_tints_only_the_transparent_part() -> None:
    flat = Image.new("RGB", (256, 256), (200, 120, 40))
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((0, 0, 127, 255), fill=(0, 0, 0, 0))  # edit the left half
    uploads = {"img": encode(flat), "mask": encode(mask)}
    data = await one(edit(mask="mask"), uploads=uploads)
    assert pixel(data, (10, 10))[:3] != (200, 120, 40)
    assert pixel(data, (245, 10))[:3] == (200, 120, 40)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF"])
async def test_edit_takes_other_upload_formats(fmt: str) -> None:
    req = edit(output_format="jpeg")
    assert checked(await one(req, uploads={"img": encode(photo(), fmt)}), req) == (256, 256)


async def test_edit_keeps_the_uploads_transparency_when_asked() -> None:
    clear = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    req = edit(background="transparent")
    data = await one(req, uploads={"img": encode(clear)})
    checked(data, req)
    assert pixel(data, (5, 5))[3] == 0


async def test_edit_without_the_upload_is_rejected() -> None:
    with pytest.raises(ProviderRejected, match="'image'"):
        await one(edit())
    with pytest.raises(ProviderRejected, match="'mask'"):
        await one(edit(mask="gone"), uploads={"img": encode(photo())})
    with pytest.raises(ProviderRejected, match="could not read"):
        await one(edit(), uploads={"img": b"\x89PNG\r\n\x1a\n garbage"})


async def test_variations_shift_colours_per_index() -> None:
    req = request(operation="variation", model="dall-e-2", prompt=None, images=("img",))
    provider = PlaceholderProvider()
    result = await provider.generate(
        call(req, model=DALLE2, indexes=(0, 1), uploads={"img": encode(photo((256, 256)))})
    )
    first, second = (image.data for image in result.images)
    assert first != second
    assert checked(first, req) == (256, 256)
    assert pixel(first, (10, 10)) != pixel(second, (10, 10))
    assert all(image.revised_prompt is None for image in result.images)


# --- revised prompts ----------------------------------------------------------------------


async def test_dall_e_3_revises_the_prompt() -> None:
    req = request(model="dall-e-3", size="1024x1024", quality="hd", style="natural")
    result = await PlaceholderProvider().generate(call(req, model=DALLE3))
    revised = result.images[0].revised_prompt
    assert revised is not None
    assert revised.startswith("a lighthouse at dusk")
    assert revised != "a lighthouse at dusk"


def test_render_is_usable_synchronously() -> None:
    req = request(output_format="jpeg")
    assert render(call(req), 0).data == render(call(req), 0).data
