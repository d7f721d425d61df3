"""Translate a request for the model the client asked for into one for the model that serves.

- Same model: unchanged; the provider must return the requested size exactly.
- Retired DALL·E names keep their meaning on their successor: dall-e-3's `hd` becomes
  `high` and `standard` `medium`, its `style` is written into the prompt, its wide sizes are
  made at the nearest GPT size and fitted (scaled and centre-cropped) to what was asked;
  dall-e-2's small squares are made at 1024x1024 and scaled down, and a variation becomes an
  edit that asks for a variation.
- Virtual models (`auto`, use cases): quality and size map to what the chosen model takes.
Aspect-ratio models (Replicate, fal.ai) pick their own pixel size for an aspect ratio, so the
output is fitted to the requested size.
"""

from __future__ import annotations

from dataclasses import replace

from policies.catalog import ModelSpec
from policies.models import ImageRequest
from policies.sizes import dimensions

__all__ = ["translate"]

_GPT_QUALITY = {"standard": "medium", "hd": "high"}
_DALLE3_QUALITY = {"low": "standard", "medium": "standard", "high": "hd", "auto": "standard"}
_STYLE = {
    "vivid": "Style: vivid, hyper-real and dramatic.",
    "natural": "Style: natural, realistic and less hyper-real.",
}
_GPT_SIZES = {"1024x1024": (1024, 1024), "1536x1024": (1536, 1024), "1024x1536": (1024, 1536)}


def translate(
    request: ImageRequest, asked: ModelSpec, spec: ModelSpec
) -> tuple[ImageRequest, tuple[int, int] | None, bool]:
    """Return (upstream request, size the client gets or None for auto, exact upstream size)."""
    target = None if request.size == "auto" else dimensions(request.size)
    if spec.name == asked.name:
        return request, target, not spec.aspect_ratios
    upstream = replace(request, model=spec.name)
    if asked.family == "dall-e-3":
        style = _STYLE.get(request.style or "", "")
        prompt = f"{request.prompt} {style}".strip() if style else request.prompt
        upstream = replace(upstream, prompt=prompt, style=None)
    if asked.family == "dall-e-2" and request.operation == "variation":
        upstream = replace(
            upstream,
            operation="edit",
            prompt="A variation of this image: same subject, new details.",
        )
    upstream = replace(
        upstream,
        quality=_quality(request.quality, spec),
        style=upstream.style if spec.family == "dall-e-3" else None,
    )
    if spec.family.startswith("gpt-image"):
        upstream = _gpt_fields(upstream, asked)
    size = _size_for(spec, request.size)
    return replace(upstream, size=size), target, False


def _quality(quality: str, spec: ModelSpec) -> str:
    if spec.family.startswith("gpt-image"):
        return _GPT_QUALITY.get(quality, quality)
    if spec.family == "dall-e-3":
        return _DALLE3_QUALITY.get(quality, quality)
    if spec.family == "dall-e-2":
        return "standard"
    return "auto"


def _gpt_fields(request: ImageRequest, asked: ModelSpec) -> ImageRequest:
    background = request.background or "auto"
    moderation = request.moderation or ("auto" if request.operation == "generate" else None)
    return replace(request, background=background, moderation=moderation)


def _size_for(spec: ModelSpec, size: str) -> str:
    if spec.aspect_ratios or spec.family == "gpt-image-2" or size == "auto":
        return size
    if spec.family.startswith("gpt-image"):
        return _nearest(size, _GPT_SIZES)
    return size


def _nearest(size: str, choices: dict[str, tuple[int, int]]) -> str:
    width, height = dimensions(size)
    ratio = width / height
    return min(
        choices,
        key=lambda c: (abs(choices[c][0] / choices[c][1] - ratio), abs(choices[c][0] - width)),
    )
