"""Check a provider's image and make it what the client asked for.

Every image is decoded before it is cached or returned: not blank, a known format, and, when
the provider was asked for an exact size, that size. Then it is converted (format) or fitted
(scaled and centre-cropped) where the serving model makes another format or size than the
request asked for (a retired model's size on its successor, an aspect-ratio model). A failed
check is a `ProviderError`: the router falls back and nothing is cached.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from policies.errors import ProviderError
from proxy.imaging import check_output, convert, quality_for, sniff

__all__ = ["Finished", "finish_image"]


@dataclass(frozen=True, slots=True)
class Finished:
    data: bytes
    width: int
    height: int
    source: tuple[int, int]  # what the provider made, before any fitting (for pricing)


def finish_image(
    data: bytes,
    *,
    fmt: str,
    compression: int | None,
    upstream_size: tuple[int, int] | None,
    exact: bool,
    target: tuple[int, int] | None,
) -> Finished:
    kind = sniff(data)
    if kind == "unknown":
        raise ProviderError(
            "The provider returned bytes that are not an image.", code="invalid_output"
        )
    if fmt == "svg" and kind != "svg":
        raise ProviderError("The provider did not return an SVG.", code="invalid_output")
    expected = upstream_size if exact else None
    info = check_output(data, expected_format=kind, expected_size=expected)
    size = (info.width, info.height)
    if kind == "svg":
        return Finished(data, info.width, info.height, size)
    if target is not None and size != target:
        return Finished(_fit(data, fmt, compression, target), *target, size)
    if kind != fmt:
        return Finished(convert(data, to_format=fmt, compression=compression), *size, size)
    return Finished(data, *size, size)


def _fit(data: bytes, fmt: str, compression: int | None, target: tuple[int, int]) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        fitted = ImageOps.fit(img.convert("RGBA"), target, method=Image.Resampling.LANCZOS)
    if fmt == "jpeg":
        flat = Image.new("RGB", fitted.size, (255, 255, 255))
        flat.paste(fitted, mask=fitted.getchannel("A"))
        fitted = flat
    out = io.BytesIO()
    options: dict[str, object] = {}
    if fmt in ("jpeg", "webp"):
        options["quality"] = quality_for(compression)
    fitted.save(out, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}[fmt], **options)
    return out.getvalue()
