"""The built-in $0 offline provider: draws a real, deterministic placeholder with Pillow.

Every pixel follows from sha256 of `repr(call.request)` and the image index, so the same
request and index always give the same bytes, with no network and no key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import textwrap
import unicodedata
from dataclasses import dataclass
from html import escape
from io import BytesIO
from typing import Final

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

from policies.errors import ProviderRejected
from policies.models import GeneratedImage
from policies.sizes import parse_size
from proxy.imaging import quality_for
from proxy.ports import ProviderCall, ProviderResult

__all__ = ["PlaceholderProvider", "render"]

RGB = tuple[int, int, int]
_DEFAULT_SIZE: Final = (1024, 1024)
_MAX_PIXELS: Final = 4096 * 4096
_MAX_FRAMES: Final = 100
_PROMPT_CHARS: Final = 1000  # more would not be legible anyway
_WHITE: Final = (255, 255, 255, 255)
_UPLOAD_FORMATS: Final = ["PNG", "JPEG", "WEBP", "GIF"]
_BOMBS: Final = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_UNREADABLE: Final = (OSError, ValueError, SyntaxError, EOFError, *_BOMBS)  # Pillow's "no"
_LINE: Final = 1.25  # line height as a multiple of the font size
_SWAPS: Final = {"Cc": " ", "Cs": "\ufffd", "Cn": "\ufffd"}  # by Unicode category
_FOLDS: Final = str.maketrans("\u2018\u2019\u201c\u201d\u2013\u2014\u00a0", "''\"\"-- ")
_INK: Final = (250, 250, 250)  # text, outlined in _HALO: legible on any background
_HALO: Final = (20, 20, 20)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything one image depends on, derived once from the request and the index."""

    size: tuple[int, int]
    fmt: str
    text: str
    caption: str
    colours: tuple[RGB, RGB, RGB]  # gradient start, gradient end, tint
    shape: int  # which gradient: 0-3 linear directions, 4 radial
    transparent: bool
    frames: int
    duration: int


class PlaceholderProvider:
    """A `Provider` that costs nothing and needs no network: it draws the prompt."""

    name = "placeholder"

    def has_credentials(self) -> bool:
        return True

    async def generate(self, call: ProviderCall) -> ProviderResult:
        # One image at a time in one worker thread: a few 4K canvases at once would hold
        # hundreds of MB, and the event loop must not wait on Pillow.
        images = await asyncio.to_thread(lambda: tuple(render(call, i) for i in call.indexes))
        return ProviderResult(images=images, cost_micros=0)

    async def aclose(self) -> None:
        return None


def render(call: ProviderCall, index: int) -> GeneratedImage:
    """Draw image `index` of `call` (synchronous, CPU-bound)."""
    req = call.request
    digest = hashlib.sha256(f"{req!r}#{index}".encode()).digest()
    plan = _plan(call, index, digest)
    if plan.fmt == "svg":
        data = _svg(plan)
    else:
        base = _base(call, plan, digest)
        frames = _frames(base, _text_layer(plan), plan)
        data = _encode(frames, plan, quality_for(req.output_compression))
    revises = call.model.rules.revises_prompt and req.prompt is not None
    revised = f"{req.prompt} (drawn offline by the imagegate placeholder)" if revises else None
    return GeneratedImage(data=data, revised_prompt=revised)


def _plan(call: ProviderCall, index: int, digest: bytes) -> _Plan:
    req = call.request
    size = parse_size(req.size) or _DEFAULT_SIZE
    if size[0] * size[1] > _MAX_PIXELS:
        raise ProviderRejected(
            f"The placeholder draws at most {_MAX_PIXELS} pixels; {req.size} is too large.",
            param="size",
        )
    start: RGB = (digest[0], digest[1], digest[2])
    end: RGB = ((start[0] + 128) % 256, (start[1] + 96) % 256, (start[2] + 160) % 256)  # far
    extras = dict(req.extras)
    frames = _json_int(extras.get("frame_count"), 1) if req.output_format == "gif" else 1
    return _Plan(
        size=size,
        fmt=req.output_format,
        text=_clean(req.prompt if req.prompt is not None else "variation"),
        caption=_clean(f"placeholder · {req.model} · #{index}"),
        colours=(start, end, (digest[6], digest[7], digest[8])),
        shape=digest[9] % 5,
        transparent=req.background == "transparent" and req.output_format != "jpeg",
        frames=max(1, min(_MAX_FRAMES, frames)),
        duration=max(20, _json_int(extras.get("frame_duration_ms"), 100)),
    )


def _json_int(raw: str | None, default: int) -> int:
    try:
        value = json.loads(raw) if raw is not None else default
    except ValueError:
        return default
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _clean(text: str) -> str:
    """Drawable, XML-safe text: controls become spaces, surrogates/unassigned U+FFFD."""
    text = text[:_PROMPT_CHARS].replace("\r\n", "\n")
    return "".join(c if c == "\n" else _SWAPS.get(unicodedata.category(c), c) for c in text)


def _base(call: ProviderCall, plan: _Plan, digest: bytes) -> Image.Image:
    """The RGBA picture under the text: a gradient, or the upload for edits/variations."""
    req = call.request
    if req.operation == "generate":
        return _gradient(plan)
    upload = _upload(call, req.images[0] if req.images else None, plan.size, "image")
    if req.operation == "variation":
        return _shift_colours(upload, plan.colours[2], 32 + digest[10] % 192)
    mask = _upload(call, req.mask, plan.size, "mask") if req.mask is not None else None
    return _tint(upload, plan.colours[2], mask)


def _gradient(plan: _Plan) -> Image.Image:
    size = plan.size
    ramp = Image.linear_gradient("L")
    if plan.shape == 1:
        ramp = ramp.transpose(Image.Transpose.ROTATE_90)
    elif plan.shape in (2, 3):
        ramp = ImageChops.add(ramp, ramp.transpose(Image.Transpose.ROTATE_90), scale=2.0)
        ramp = ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if plan.shape == 3 else ramp
    elif plan.shape == 4:
        ramp = Image.radial_gradient("L")
    start, end, _ = plan.colours
    mask = ramp.resize(size, Image.Resampling.BILINEAR)
    picture = Image.composite(Image.new("RGBA", size, end), Image.new("RGBA", size, start), mask)
    if plan.transparent:  # a rounded card on a transparent canvas
        card = Image.new("L", size, 0)
        inset = min(size) // 12
        box = (inset, inset, size[0] - 1 - inset, size[1] - 1 - inset)
        ImageDraw.Draw(card).rounded_rectangle(box, radius=inset, fill=255)
        picture.putalpha(card)
    return picture


def _upload(call: ProviderCall, key: str | None, size: tuple[int, int], param: str) -> Image.Image:
    data = call.uploads.get(key) if key is not None else None
    if data is None:
        raise ProviderRejected(f"The placeholder got no '{param}' upload.", param=param)
    try:
        with Image.open(BytesIO(data), formats=_UPLOAD_FORMATS) as img:
            return ImageOps.fit(img.convert("RGBA"), size, Image.Resampling.BILINEAR)
    except _UNREADABLE as exc:
        raise ProviderRejected(
            f"The placeholder could not read the '{param}' upload ({exc}).", param=param
        ) from None


def _tint(base: Image.Image, colour: RGB, mask: Image.Image | None) -> Image.Image:
    """Edit: tint where the mask is transparent (the whole image when there is no mask)."""
    tinted = Image.blend(base.convert("RGB"), Image.new("RGB", base.size, colour), 0.5)
    tinted.putalpha(base.getchannel("A"))
    if mask is None:
        return Image.blend(base, tinted, 0.5)
    where = mask.getchannel("A").point([255] + [0] * 255)  # 255 exactly where alpha == 0
    return Image.composite(tinted, base, where)


def _shift_colours(base: Image.Image, colour: RGB, shift: int) -> Image.Image:
    """Variation: rotate the hue by `shift`/256 of a turn, then a light tint for greys."""
    hue, sat, val = base.convert("RGB").convert("HSV").split()
    hue = hue.point([(v + shift) % 256 for v in range(256)])
    shifted = Image.merge("HSV", (hue, sat, val)).convert("RGB")
    shifted = Image.blend(shifted, Image.new("RGB", base.size, colour), 0.2)
    shifted.putalpha(base.getchannel("A"))
    return shifted


def _text_layer(plan: _Plan) -> Image.Image:
    """The prompt, centred and wrapped, plus a small caption, on a transparent layer."""
    width, height = plan.size
    layer = Image.new("RGBA", plan.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font, lines = _fit_text(_fold(plan.text), width * 0.8, height * 0.7)
    text, centre, gap = "\n".join(lines), (width / 2, height / 2), font.size // 4
    stroke = max(1, round(font.size / 12))
    draw.multiline_text(
        centre, text, _INK, font, "mm", gap, "center", stroke_width=stroke, stroke_fill=_HALO
    )
    small = ImageFont.load_default(size=max(8, min(width, height) // 40))
    corner = (min(width, height) // 20 + 2, height - min(width, height) // 20 - 2)
    draw.text(corner, _fold(plan.caption), _INK, small, "ld", stroke_width=1, stroke_fill=_HALO)
    return layer


def _fold(text: str) -> str:
    """Pillow's default font covers ASCII only: drop accents and fold typographic quotes
    and dashes so most Latin text stays legible (other scripts draw as boxes)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLDS))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _fit_text(text: str, box_w: float, box_h: float) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """A font size for `text` to about fill the box, and the text wrapped to the box by the
    measured mean width of its own characters."""
    area = box_w * box_h / (max(len(text), 1) * 0.6 * _LINE)
    px = max(10, min(round(area**0.5), round(box_h / 3), round(box_w / 6)))
    font = ImageFont.load_default(size=px)
    assert isinstance(font, ImageFont.FreeTypeFont)  # Pillow is built with FreeType
    sample = text[:200] or " "
    per_char = max(1.0, font.getlength(sample) / len(sample))
    return font, _wrap(text, int(box_w / per_char), int(box_h // (px * _LINE)))


def _wrap(text: str, chars: int, max_lines: int) -> list[str]:
    """At most `max_lines` lines of `chars`; an ellipsis ends text that was cut."""
    lines = textwrap.wrap(text, max(8, chars), max_lines=max(1, max_lines), placeholder=" ...")
    return lines or [""]


def _frames(base: Image.Image, text: Image.Image, plan: _Plan) -> list[Image.Image]:
    """One frame, or `plan.frames` frames whose background slides under the text while a
    progress bar grows (so no two frames are equal and the GIF keeps them all)."""
    width, height = plan.size
    white = Image.new("RGBA", plan.size, _WHITE)  # under what is not transparent-on-purpose
    frames = []
    for k in range(plan.frames):
        frame = base if plan.frames == 1 else ImageChops.offset(base, k * width // plan.frames, 0)
        frame = Image.alpha_composite(frame, text)
        if plan.frames > 1:
            bar = (0, height - max(2, height // 60), (k + 1) * width // plan.frames, height)
            ImageDraw.Draw(frame).rectangle(bar, fill=(*plan.colours[2], 255))
        if not plan.transparent:
            frame = Image.alpha_composite(white, frame).convert("RGB")
        frames.append(frame)
    return frames


def _encode(frames: list[Image.Image], plan: _Plan, quality: int) -> bytes:
    """Encode without metadata (no timestamps, no EXIF), so bytes are reproducible."""
    options: dict[str, object] = {"quality": quality} if plan.fmt in ("jpeg", "webp") else {}
    if plan.fmt == "gif":
        options.update(duration=plan.duration, loop=0, disposal=2)
        if len(frames) > 1:
            options.update(save_all=True, append_images=frames[1:])
    out = BytesIO()
    frames[0].save(out, plan.fmt.upper(), **options)  # PNG, JPEG, WEBP, GIF
    return out.getvalue()


def _svg(plan: _Plan) -> bytes:
    """A small well-formed SVG: gradient (or card), the wrapped prompt, the caption."""
    width, height = plan.size
    start, end, _ = (f"#{r:02x}{g:02x}{b:02x}" for r, g, b in plan.colours)
    px = max(10, min(width, height) // 16)
    lines = _wrap(plan.text, int(width * 0.8 / (px * 0.55)), int(height * 0.7 // (px * _LINE)))
    top = height / 2 - (len(lines) - 1) * px * _LINE / 2
    spans = "".join(
        f'<tspan x="{width / 2:g}" y="{top + i * px * _LINE:.1f}">{escape(line)}</tspan>'
        for i, line in enumerate(lines)
    )
    inset = min(width, height) // 12 if plan.transparent else 0
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
        f'<defs><linearGradient id="g" x2="1" y2="1"><stop offset="0" stop-color="{start}"/>'
        f'<stop offset="1" stop-color="{end}"/></linearGradient></defs>'
        f'<rect x="{inset}" y="{inset}" width="{width - 2 * inset}" '
        f'height="{height - 2 * inset}" rx="{inset}" fill="url(#g)"/>'
        f'<text font-family="sans-serif" font-size="{px}" text-anchor="middle" '
        f'dominant-baseline="middle" fill="#fafafa" stroke="#141414" stroke-width="{px / 24:.1f}" '
        f'paint-order="stroke">{spans}</text>'
        f'<text x="{px}" y="{height - px}" font-family="sans-serif" font-size="{px // 2}" '
        f'fill="#fafafa">{escape(plan.caption)}</text></svg>\n'
    ).encode()
