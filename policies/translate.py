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

from policies.catalog import Family, ModelSpec
from policies.models import ImageRequest
from policies.sizes import dimensions

__all__ = ["translate"]


def translate(
    request: ImageRequest, asked: ModelSpec, spec: ModelSpec
) -> tuple[ImageRequest, tuple[int, int] | None, bool]:
    """Return (upstream request, size the client gets or None for auto, exact upstream size)."""
    target = None if request.size == "auto" else dimensions(request.size)
    if spec.name == asked.name:
        return request, target, not spec.aspect_ratios
    upstream = replace(request, model=spec.name)
    asked_rules, rules = asked.rules, spec.rules
    if asked_rules.style_phrases:
        style = dict(asked_rules.style_phrases).get(request.style or "", "")
        prompt = f"{request.prompt} {style}".strip() if style else request.prompt
        upstream = replace(upstream, prompt=prompt, style=None)
    if asked_rules.variation_prompt and request.operation == "variation":
        upstream = replace(upstream, operation="edit", prompt=asked_rules.variation_prompt)
    upstream = replace(
        upstream,
        quality=_quality(request.quality, rules),
        style=upstream.style if rules.styles else None,
    )
    if rules.gpt_fields:
        upstream = _gpt_fields(upstream)
    size = _size_for(spec, request.size)
    return replace(upstream, size=size), target, False


def _quality(quality: str, rules: Family) -> str:
    qualities = dict(rules.quality_map)
    return qualities.get(quality, qualities.get("*", quality))


def _gpt_fields(request: ImageRequest) -> ImageRequest:
    background = request.background or "auto"
    moderation = request.moderation or ("auto" if request.operation == "generate" else None)
    return replace(request, background=background, moderation=moderation)


def _size_for(spec: ModelSpec, size: str) -> str:
    if spec.aspect_ratios or size == "auto" or not spec.rules.nearest_size:
        return size
    choices = {s: dimensions(s) for s in spec.rules.sizes if s != "auto"}
    return _nearest(size, choices) if choices else size


def _nearest(size: str, choices: dict[str, tuple[int, int]]) -> str:
    width, height = dimensions(size)
    ratio = width / height
    return min(
        choices,
        key=lambda c: (abs(choices[c][0] / choices[c][1] - ratio), abs(choices[c][0] - width)),
    )
