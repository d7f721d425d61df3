"""Tiny deterministic test images made with Pillow, and broken ones on purpose.

Everything here is a pure function of its arguments, so two calls give identical bytes (the
encoders are deterministic for a given Pillow build). Format names follow OpenAI (`jpeg`);
Replicate's `jpg` is accepted as an alias.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache

from PIL import Image, ImageDraw

__all__ = [
    "FORMATS",
    "MIME_TYPES",
    "Color",
    "blank",
    "corrupt",
    "decodes",
    "image_info",
    "make_image",
    "make_jpeg",
    "make_mask",
    "make_png",
    "make_webp",
    "render",
    "sniff_format",
    "truncate",
]

Color = tuple[int, int, int] | tuple[int, int, int, int]

#: format name -> Pillow encoder name
FORMATS: dict[str, str] = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
#: format name -> MIME type
MIME_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
}
GREY: Color = (128, 128, 128)


def _encode(img: Image.Image, fmt: str, *, quality: int | None = None) -> bytes:
    """Encode `img` as `fmt` (png, jpeg/jpg or webp) with fast, deterministic settings."""
    encoder = FORMATS[fmt.lower()]
    buf = io.BytesIO()
    if encoder == "JPEG":
        img.convert("RGB").save(buf, "JPEG", quality=quality or 90)
    elif encoder == "WEBP":
        img.save(buf, "WEBP", quality=quality or 80, method=0)
    else:
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def make_image(
    width: int,
    height: int,
    fmt: str = "png",
    color: Color = GREY,
    *,
    alpha: bool = False,
    quality: int | None = None,
) -> bytes:
    """A solid `width`x`height` image of `color` encoded as `fmt`.

    With `alpha=True` the image is RGBA (png/webp only); the alpha is the colour's fourth
    component, or 255 when a 3-tuple is given.
    """
    if alpha:
        rgba = color if len(color) == 4 else (*color, 255)
        img = Image.new("RGBA", (width, height), rgba)
    else:
        img = Image.new("RGB", (width, height), color[:3])
    return _encode(img, fmt, quality=quality)


def make_png(width: int, height: int, color: Color = GREY, *, alpha: bool = False) -> bytes:
    """A solid PNG; `alpha=True` makes it RGBA (see `make_image`)."""
    return make_image(width, height, "png", color, alpha=alpha)


def make_jpeg(width: int, height: int, color: Color = GREY, *, quality: int = 90) -> bytes:
    """A solid baseline JPEG."""
    return make_image(width, height, "jpeg", color, quality=quality)


def make_webp(width: int, height: int, color: Color = GREY, *, alpha: bool = False) -> bytes:
    """A solid lossy WEBP; `alpha=True` makes it RGBA."""
    return make_image(width, height, "webp", color, alpha=alpha)


def make_mask(width: int, height: int, hole: tuple[int, int, int, int] | None = None) -> bytes:
    """An RGBA PNG edit mask: opaque black with a fully transparent `hole` (x0, y0, x1, y1).

    OpenAI edits the pixels where the mask's alpha is 0. The default hole is the centre quarter.
    """
    img = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    box = hole or (width // 4, height // 4, width * 3 // 4, height * 3 // 4)
    ImageDraw.Draw(img).rectangle(box, fill=(0, 0, 0, 0))
    return _encode(img, "png")


@lru_cache(maxsize=256)
def render(
    key: str,
    width: int,
    height: int,
    fmt: str = "png",
    *,
    transparent: bool = False,
    quality: int | None = None,
) -> bytes:
    """A deterministic, clearly non-blank picture for `key`: a background and a few shapes whose
    colours and positions come from sha256(key). `transparent=True` leaves the background at
    alpha 0 (png/webp); the shapes stay opaque."""
    digest = hashlib.sha256(key.encode()).digest()
    bg = (digest[0], digest[1], digest[2], 0 if transparent else 255)
    mode = "RGBA" if transparent else "RGB"
    img = Image.new(mode, (width, height), bg if transparent else bg[:3])
    draw = ImageDraw.Draw(img)
    for i in range(4):
        b = digest[3 + i * 7 : 10 + i * 7]
        x0, y0 = b[0] * width // 512, b[1] * height // 512
        x1, y1 = x0 + (64 + b[2]) * width // 512, y0 + (64 + b[3]) * height // 512
        fill = (b[4], b[5], b[6], 255)
        shape = draw.ellipse if i % 2 else draw.rectangle
        shape((x0, y0, x1, y1), fill=fill if transparent else fill[:3])
    # A frame in the inverse background colour, so even an unlucky hash is never uniform.
    inverse = (255 - bg[0], 255 - bg[1], 255 - bg[2], 255)
    edge = max(2, min(width, height) // 64)
    outline = inverse if transparent else inverse[:3]
    draw.rectangle((0, 0, width - 1, height - 1), outline=outline, width=edge)
    return _encode(img, fmt, quality=quality)


def blank(width: int, height: int, fmt: str = "png") -> bytes:
    """A uniformly black image: what a provider's safety filter sends instead of a picture."""
    return make_image(width, height, fmt, (0, 0, 0))


def corrupt(fmt: str = "png") -> bytes:
    """Bytes that carry the format's magic number and then garbage: sniffers accept them,
    decoders do not."""
    magic = {
        "png": b"\x89PNG\r\n\x1a\n",
        "jpeg": b"\xff\xd8\xff\xe0",
        "jpg": b"\xff\xd8\xff\xe0",
        "webp": b"RIFF\x10\x00\x00\x00WEBP",
    }[fmt.lower()]
    return magic + hashlib.sha256(b"corrupt").digest() * 8


def truncate(data: bytes, keep: float = 0.5) -> bytes:
    """The first `keep` fraction of an encoded image: the header parses, the pixels do not."""
    return data[: max(16, int(len(data) * keep))]


def sniff_format(data: bytes) -> str | None:
    """`png`, `jpeg`, `webp` or `gif` from the magic bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def image_info(data: bytes) -> tuple[str, int, int, str]:
    """Fully decode `data`: (format, width, height, mode). Raises on corrupt or truncated bytes
    (PIL.UnidentifiedImageError or OSError)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        fmt = (img.format or "").lower()
        return fmt, img.width, img.height, img.mode


def decodes(data: bytes) -> bool:
    """Whether `data` fully decodes as an image (False for corrupt or truncated bytes)."""
    try:
        image_info(data)
    except Exception:
        return False
    return True
