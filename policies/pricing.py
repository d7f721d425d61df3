"""Prices in integer micro-USD: a worst-case quote before a call, the actual cost after.

Every part of a model's `Price` that is set adds up:
- per image: the first of "quality:size", size, quality, "*" that the table has. A quote for
  `quality=auto` or `size=auto` takes the dearest matching entry.
- per megapixel (1,000,000 pixels) of output: quoted on the requested size (auto: 1024x1024),
  settled on the size the provider returned.
- per token (per 1M, from the provider's usage): text in, image in, image out. Settled from
  usage when the provider reports it; the per-image table is then only the quote's estimate.
- GPU time: micro-USD per GPU-hour times seconds (self-hosted, or Replicate's predict_time).
Fractions of a micro-dollar round up, once, on the total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from policies.catalog import ModelSpec, Price
from policies.models import ImageRequest
from policies.sizes import dimensions

__all__ = ["Usage", "quote", "settle"]

_TOKENS_PRICED = 1_000_000  # token prices are micro-USD per million tokens
_PIXELS_PER_MEGAPIXEL = 1_000_000

# Upper bound on the input tokens one uploaded image costs (a 1536x1024 input at high fidelity
# is about 6,240 tokens); quotes use it so that a reservation covers the real bill.
IMAGE_INPUT_TOKENS = 8_000
# Upper bound on the output tokens of a 1024x1024 image (high quality; OpenAI's table says
# 4,160), scaled by area, for token-priced models without an `output_tokens` table.
IMAGE_OUTPUT_TOKENS_PER_1024 = 4_160


@dataclass(frozen=True, slots=True)
class Usage:
    text_in: int = 0
    image_in: int = 0
    image_out: int = 0


def quote(spec: ModelSpec, request: ImageRequest, images: int) -> int:
    """The most this request can cost on `spec` for `images` images."""
    price = spec.price
    per_image = Fraction(_per_image(price, request))
    if price.tokens_image_out:
        tokens = _output_tokens(price, request)
        per_image = max(per_image, Fraction(tokens * price.tokens_image_out, _TOKENS_PRICED))
    total = per_image * images
    total += _megapixels(price, dimensions(request.size)) * images
    if price.tokens_text_in or price.tokens_image_in:
        prompt_tokens = len(request.prompt or "") + 16
        image_tokens = IMAGE_INPUT_TOKENS * (len(request.images) + (1 if request.mask else 0))
        total += _tokens(price, Usage(text_in=prompt_tokens, image_in=image_tokens))
    if price.gpu_hour and price.gpu_seconds_per_image:
        total += Fraction(price.gpu_hour) * Fraction(price.gpu_seconds_per_image) * images / 3600
    return _ceil(total)


def settle(
    spec: ModelSpec,
    request: ImageRequest,
    images: int,
    *,
    usage: Usage | None = None,
    gpu_seconds: float | None = None,
    output_size: tuple[int, int] | None = None,
) -> int:
    """What the call cost, from the formula and what the provider reported."""
    price = spec.price
    if usage is not None and (price.tokens_image_out or price.tokens_text_in):
        total = _tokens(price, usage)
    else:
        total = Fraction(_per_image(price, request) * images)
    size = output_size or dimensions(request.size)
    total += _megapixels(price, size) * images
    if price.gpu_hour:
        seconds = gpu_seconds if gpu_seconds is not None else price.gpu_seconds_per_image * images
        total += Fraction(price.gpu_hour) * Fraction(seconds) / 3600
    return _ceil(total)


def _output_tokens(price: Price, request: ImageRequest) -> int:
    if price.output_tokens:
        return _lookup(price.output_tokens, request)
    width, height = dimensions(request.size)
    return -((-IMAGE_OUTPUT_TOKENS_PER_1024 * width * height) // (1024 * 1024))


def _per_image(price: Price, request: ImageRequest) -> int:
    return _lookup(price.per_image, request) if price.per_image else 0


def _lookup(table: Mapping[str, int], request: ImageRequest) -> int:
    """The table's value for the request; for `auto` quality or size, the dearest match."""
    quality, size = request.quality, request.size
    for key in (f"{quality}:{size}", size, quality, "*"):
        if key in table:
            return table[key]
    matching = [value for key, value in table.items() if _matches(key, quality, size)]
    return max(matching or table.values())


def _matches(key: str, quality: str, size: str) -> bool:
    q, _, s = key.partition(":") if ":" in key else ("", "", key)
    quality_ok = quality == "auto" or not q or q == quality
    size_ok = size == "auto" or s == size or not s
    return quality_ok and size_ok


def _megapixels(price: Price, size: tuple[int, int]) -> Fraction:
    if not price.per_megapixel:
        return Fraction(0)
    return Fraction(price.per_megapixel * size[0] * size[1], _PIXELS_PER_MEGAPIXEL)


def _tokens(price: Price, usage: Usage) -> Fraction:
    return Fraction(
        usage.text_in * price.tokens_text_in
        + usage.image_in * price.tokens_image_in
        + usage.image_out * price.tokens_image_out,
        _TOKENS_PRICED,
    )


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)
