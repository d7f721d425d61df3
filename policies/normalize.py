"""Wire body -> validated, normalized `ParsedRequest`; and the request key.

The rules (also in the README, pinned by property tests):
- `null` means "not given"; every default is filled in explicitly, so leaving a field out,
  sending `null` and sending its default give the same key.
- The model name is resolved through the catalog's aliases.
- The prompt is put in Unicode NFC and every run of white space becomes one space, with
  none at either end. Case is kept: it matters for text drawn in images.
- Fields that cannot change the pixels are dropped: `n` (each index is its own entry),
  `user`, `safety_identifier`, `response_format`, `stream`, `partial_images`;
  `output_compression` is dropped where the format ignores it (png, gif, svg).
- Uploaded images and masks are replaced by the sha256 of their bytes.
- key = sha256("imagegate/v1\n" + canonical JSON of the normalized request).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import fields as dataclass_fields
from dataclasses import replace
from typing import Final, Literal, cast

from policies.catalog import Catalog, Family, ModelSpec
from policies.errors import InvalidRequest
from policies.fields import EDIT_FIELDS, GENERATION_FIELDS, VARIATION_FIELDS, Fields
from policies.models import (
    Delivery,
    ImageFormat,
    ImageRequest,
    Operation,
    ParsedRequest,
    UploadInfo,
)
from policies.sizes import check_size
from policies.uploads import check_edit_images, check_mask

__all__ = [
    "KEY_PREFIX",
    "canonical_json",
    "normalize_prompt",
    "parse_edit",
    "parse_generation",
    "parse_variation",
    "request_key",
]

KEY_PREFIX = "imagegate/v1\n"

_WHITESPACE = re.compile(r"\s+")


def normalize_prompt(prompt: str) -> str:
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", prompt)).strip()


_KEY_FIELDS: Final = tuple(field.name for field in dataclass_fields(ImageRequest))


def canonical_json(request: ImageRequest, scope: str = "") -> str:
    """What `json.dumps(asdict(request))` gives (tuples are JSON arrays either way), without
    asdict's recursive copy: the same key bytes at a fraction of the cost of a store hit."""
    body: dict[str, object] = {name: getattr(request, name) for name in _KEY_FIELDS}
    if scope:
        body["scope"] = scope
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(request: ImageRequest, scope: str = "") -> str:
    text = KEY_PREFIX + canonical_json(request, scope)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_generation(
    body: Mapping[str, object], catalog: Catalog, *, default_model: str
) -> ParsedRequest:
    fields = Fields(body, form=False)
    spec, family, requested = _model(fields, catalog, default_model, "generate")
    request = _common(fields, spec, family, "generate", prompt_required=True)
    fields.reject_unknown(GENERATION_FIELDS)
    return ParsedRequest(request, _delivery(fields, family), requested)


def parse_edit(
    form: Mapping[str, object],
    images: Sequence[UploadInfo],
    mask: UploadInfo | None,
    catalog: Catalog,
    *,
    default_model: str,
    markup: UploadInfo | None = None,
    json_body: bool = False,
) -> ParsedRequest:
    """A multipart edit (fields as text), or with `json_body` a JSON one (typed fields;
    GPT image models only, as OpenAI's EditImageBodyJsonParam)."""
    fields = Fields(form, form=not json_body)
    spec, family, requested = _model(fields, catalog, default_model, "edit")
    if json_body:
        _json_edit_model(fields, family, requested)
    check_edit_images(images, family)
    if mask is not None and markup is not None:
        raise InvalidRequest("'markup' cannot be combined with 'mask'.", param="markup")
    if mask is not None:
        check_mask(mask, images[0])
    request = _common(fields, spec, family, "edit", prompt_required=True)
    fidelity = _input_fidelity(fields, spec, family)
    fields.reject_unknown(EDIT_FIELDS)
    extras = request.extras + ((("markup", json.dumps(markup.sha256)),) if markup else ())
    request = replace(
        request,
        images=tuple(i.sha256 for i in images),
        mask=mask.sha256 if mask else None,
        input_fidelity=fidelity,
        extras=tuple(sorted(extras)),
    )
    return ParsedRequest(request, _delivery(fields, family), requested)


def _json_edit_model(fields: Fields, family: Family, requested: str) -> None:
    if not family.gpt_fields:
        raise InvalidRequest(
            f"The model '{requested}' takes edits as multipart/form-data only; JSON edits "
            "(images as image_url) are for GPT image models.",
            param="model",
            code="unsupported_model",
        )
    # In OpenAI's JSON edit schema, though no pixels depend on it: checked, then dropped.
    fields.string("moderation", choices=("low", "auto"))


def parse_variation(
    form: Mapping[str, object], image: UploadInfo | None, catalog: Catalog
) -> ParsedRequest:
    fields = Fields(form, form=True)
    spec, family, requested = _model(fields, catalog, "dall-e-2", "variation")
    if image is None:
        raise InvalidRequest(
            "Missing required parameter: 'image'.", param="image", code="missing_required_parameter"
        )
    check_edit_images([image], family)
    size = fields.string("size") or family.default_size
    check_size(size, family)
    seed = fields.integer("seed", low=0, high=2**32 - 1)
    fields.reject_unknown(VARIATION_FIELDS)
    request = ImageRequest(
        operation="variation",
        model=spec.name,
        prompt=None,
        size=size,
        quality=family.default_quality,
        output_format="png",
        images=(image.sha256,),
        seed=seed,
    )
    return ParsedRequest(request, _delivery(fields, family), requested)


def _model(
    fields: Fields, catalog: Catalog, default: str, operation: Operation
) -> tuple[ModelSpec, Family, str]:
    requested = fields.string("model") or default
    spec = catalog.resolve(requested)
    if not spec.available:
        raise InvalidRequest(
            f"The model '{requested}' is not available: {spec.unavailable_reason}",
            param="model",
            code="model_unavailable",
        )
    family = catalog.family_of(spec)
    if operation not in family.operations:
        verb = {"generate": "generations", "edit": "edits", "variation": "variations"}[operation]
        raise InvalidRequest(
            f"The model '{requested}' does not support image {verb}.",
            param="model",
            code="unsupported_model",
        )
    return spec, family, requested


def _common(
    fields: Fields, spec: ModelSpec, family: Family, op: Operation, *, prompt_required: bool
) -> ImageRequest:
    prompt = _prompt(fields, family, required=prompt_required)
    size = fields.string("size") or family.default_size
    check_size(size, family)
    quality = fields.string("quality", choices=family.qualities) or family.default_quality
    style = _style(fields, family)
    fmt, background, compression, moderation = _gpt_fields(fields, family, op)
    seed = fields.integer("seed", low=0, high=2**32 - 1)
    return ImageRequest(
        operation=op,
        model=spec.name,
        prompt=prompt,
        size=size,
        quality=quality,
        output_format=fmt,
        style=style,
        background=background,
        output_compression=compression,
        moderation=moderation,
        seed=seed,
        extras=_extras(fields, family, fmt),
    )


def _prompt(fields: Fields, family: Family, *, required: bool) -> str | None:
    prompt = fields.string("prompt", allow_empty=True)
    if prompt is None or not prompt.strip():
        if required:
            raise InvalidRequest(
                "Missing required parameter: 'prompt'.",
                param="prompt",
                code="missing_required_parameter",
            )
        return None
    if len(prompt) > family.prompt_max:
        raise InvalidRequest(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{family.prompt_max}, but got a string with length {len(prompt)} instead.",
            param="prompt",
            code="string_above_max_length",
        )
    return normalize_prompt(prompt)


def _style(fields: Fields, family: Family) -> str | None:
    if not family.styles:
        fields.unsupported("style", f"for {family.name} models; only dall-e-3 takes a style")
        return None
    return fields.string("style", choices=family.styles) or family.default_style


def _gpt_fields(
    fields: Fields, family: Family, op: Operation
) -> tuple[ImageFormat, str | None, int | None, str | None]:
    """output_format, background, output_compression, moderation, per the family's rules."""
    why = f"for {family.name} models; it is a GPT image model parameter"
    if not family.gpt_fields:
        for name in ("background", "moderation"):
            fields.unsupported(name, why)
        if fields.boolean("stream"):
            raise InvalidRequest(
                f"Streaming is not supported {why}.", param="stream", code="unsupported_parameter"
            )
        if family.output_formats == ("png",):
            fields.unsupported("output_format", why)
            fields.unsupported("output_compression", why)
            return "png", None, None, None
    fmt = cast(ImageFormat, fields.string("output_format", choices=family.output_formats) or "png")
    compression = fields.integer("output_compression", low=0, high=100)
    compression = (100 if compression is None else compression) if fmt in ("jpeg", "webp") else None
    if not family.gpt_fields:
        return fmt, None, compression, None
    background = fields.string("background", choices=("transparent", "opaque", "auto")) or "auto"
    if background == "transparent" and fmt not in ("png", "webp", "gif", "svg"):
        raise InvalidRequest(
            "A transparent background needs output_format 'png' or 'webp'.", param="background"
        )
    moderation = None
    if op == "generate":
        moderation = fields.string("moderation", choices=("low", "auto")) or "auto"
    return fmt, background, compression, moderation


def _extras(fields: Fields, family: Family, fmt: str) -> tuple[tuple[str, str], ...]:
    names = ("complexity", "frame_count", "frame_duration_ms", "svg")
    if not family.extras:
        for name in names:
            fields.unsupported(name, f"for {family.name} models")
        return ()
    out: list[tuple[str, str]] = []
    complexity = fields.string("complexity", choices=("low", "medium", "high"))
    if complexity is not None:
        out.append(("complexity", json.dumps(complexity)))
    for name, low, high in (("frame_count", 2, 16), ("frame_duration_ms", 10, 10_000)):
        value = fields.integer(name, low=low, high=high)
        if value is not None:
            if fmt != "gif":
                raise InvalidRequest(f"'{name}' needs output_format 'gif'.", param=name)
            out.append((name, str(value)))
    svg = fields.json_value("svg")
    if svg is not None:
        out.append(("svg", svg))
    return tuple(sorted(out))


def _input_fidelity(fields: Fields, spec: ModelSpec, family: Family) -> str | None:
    allowed = (
        spec.input_fidelities if spec.input_fidelities is not None else family.input_fidelities
    )
    if not allowed:
        fields.unsupported("input_fidelity", f"for {spec.name}")
        return None
    return fields.string("input_fidelity", choices=allowed) or "low"


def _delivery(fields: Fields, family: Family) -> Delivery:
    n = fields.integer("n", low=1, high=10) or 1
    if n > family.n_max:
        raise InvalidRequest(
            f"Invalid 'n': {family.name} makes at most {family.n_max} image(s) per request.",
            param="n",
        )
    response_format = fields.string("response_format", choices=("url", "b64_json"))
    stream = bool(fields.boolean("stream")) if family.gpt_fields else False
    partial = fields.integer("partial_images", low=0, high=3) or 0
    fields.string("user", allow_empty=True)
    fields.string("safety_identifier", allow_empty=True)
    fmt = cast(Literal["url", "b64_json"], response_format or family.default_response_format)
    return Delivery(n=n, response_format=fmt, stream=stream, partial_images=partial)
