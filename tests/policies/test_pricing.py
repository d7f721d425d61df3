"""The quote is a true worst case: what a call settles at (from the price table, or from a
usage an upstream reports honestly) never exceeds what was reserved for it."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from policies.models import ImageRequest
from policies.pricing import IMAGE_OUTPUT_TOKENS_PER_1024, Usage, quote, settle
from policies.sizes import dimensions
from proxy.catalog_loader import load_catalog

CATALOG = load_catalog()
TOKEN_PRICED = sorted(
    name
    for name, spec in CATALOG.models.items()
    if spec.price.tokens_image_out and not spec.virtual and not spec.retired
)
# Output tokens per 1024x1024 image by quality, as OpenAI reports them (WIRE.md).
OUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}
SIZES = ["1024x1024", "1536x1024", "1024x1536", "2048x2048", "3840x2160", "auto"]


def honest_usage(table: dict[str, int], prompt: str, quality: str, size: str, n: int) -> Usage:
    """The model's own token table where it has one; else the 1024x1024 rate by area."""
    quality = "high" if quality == "auto" else quality
    width, height = dimensions(size)
    per = table.get(f"{quality}:{width}x{height}")
    if per is None:
        per = math.ceil(OUT_TOKENS[quality] * width * height / 1024**2)
    return Usage(text_in=math.ceil(len(prompt) / 4), image_out=n * per)


def test_the_output_token_bound_is_the_high_quality_rate():
    assert OUT_TOKENS["high"] == IMAGE_OUTPUT_TOKENS_PER_1024


@given(
    model=st.sampled_from(TOKEN_PRICED),
    quality=st.sampled_from(["low", "medium", "high", "auto"]),
    size=st.sampled_from(SIZES),
    images=st.integers(min_value=1, max_value=4),
    prompt=st.text(min_size=1, max_size=300),
)
def test_a_token_priced_call_settles_within_its_quote(model, quality, size, images, prompt):
    spec = CATALOG.models[model]
    if spec.family != "gpt-image-2" and size not in ("1024x1024", "1536x1024", "1024x1536"):
        size = "1024x1024"  # the fixed-size models make only these
    request = ImageRequest("generate", model, prompt, size, quality, "png")
    reported = honest_usage(dict(spec.price.output_tokens), prompt, quality, size, images)
    output = dimensions(size)
    assert settle(spec, request, images, usage=reported, output_size=output) <= quote(
        spec, request, images
    )
