"""The OpenAI fake's model table, request rules and token accounting (per WIRE.md §1-2).

Models (`MODELS`):

| model                       | n    | sizes                                 | edits | fidelity  |
|-----------------------------|------|---------------------------------------|-------|-----------|
| dall-e-2                    | 1-10 | 256x256, 512x512, 1024x1024           | yes   | -         |
| dall-e-3                    | 1    | 1024x1024, 1792x1024, 1024x1792       | no    | -         |
| gpt-image-1, gpt-image-1.5, | 1-10 | 1024x1024, 1536x1024, 1024x1536, auto | yes   | low, high |
| chatgpt-image-latest        |      |                                       |       |           |
| gpt-image-1-mini            | 1-10 | (as gpt-image-1)                      | yes   | low       |
| gpt-image-2, gpt-image-2-   | 1-10 | any WxH: sides % 16 == 0, ratio <= 3, | yes   | omit it   |
| 2026-04-21                  |      | edge <= 3840, 655360..8294400 pixels  |       |           |

Qualities: dall-e-2 `standard`; dall-e-3 `standard`, `hd`; GPT image `low`, `medium`, `high`,
`auto`. `style` is dall-e-3 only (ignored by dall-e-2); `response_format` is DALL-E only.

Defaults: model `dall-e-2`, or `gpt-image-1` when a GPT-image-only field is present (`background`,
`output_format`, `output_compression`, `moderation`, `stream`, `partial_images`,
`input_fidelity`); size `1024x1024` (`auto` -> 1024x1024); quality `standard` (DALL-E) or
`auto` -> **high** (GPT); output_format `png`; background `auto` -> `opaque`.

Usage (GPT image models only), deterministic:
- `input_tokens_details.text_tokens` = ceil(len(prompt) / 4), at least 1;
- `input_tokens_details.image_tokens` = per edit input image, `INPUT_IMAGE_TOKENS[fidelity]`
  (low 135, high 3050; fidelity defaults to low; the mask is free);
- `output_tokens` = n x `OUTPUT_TOKENS[quality][size]` (the gpt-image-1 table, used for every
  GPT image model; other sizes scale the 1024x1024 figure by pixel area, rounded), plus
  `PARTIAL_IMAGE_TOKENS` (100) per streamed partial image;
- `output_tokens_details` = {image_tokens: output_tokens, text_tokens: 0}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAULT_BODIES",
    "GPT_ONLY",
    "INPUT_IMAGE_TOKENS",
    "MODELS",
    "OUTPUT_TOKENS",
    "PARTIAL_IMAGE_TOKENS",
    "ImageModel",
    "OpenAIError",
    "Plan",
    "coerce_form",
    "output_tokens_per_image",
    "usage",
    "validate",
]

DALLE2_SIZES = ("256x256", "512x512", "1024x1024")
DALLE3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
GPT_QUALITIES = ("low", "medium", "high", "auto")

OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
INPUT_IMAGE_TOKENS: dict[str, int] = {"low": 135, "high": 3050}
PARTIAL_IMAGE_TOKENS = 100
AUTO_QUALITY = "high"
RATELIMIT_REQUESTS = 500  # x-ratelimit-* header values
RATELIMIT_TOKENS = 100_000
#: status -> (message, type, code) of the error body a scripted fault sends by default
FAULT_BODIES: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for images per min. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}

GPT_ONLY = frozenset(
    {
        "background",
        "output_format",
        "output_compression",
        "moderation",
        "stream",
        "partial_images",
        "input_fidelity",
        "complexity",
        "frame_count",
        "frame_duration_ms",
        "svg",
    }
)
COMMON = frozenset({"prompt", "model", "n", "size", "quality", "user", "safety_identifier"})
GEN_FIELDS = COMMON | GPT_ONLY - {"input_fidelity"} | {"style", "response_format"}
EDIT_FIELDS = COMMON | GPT_ONLY - {"moderation"} | {"response_format"}
INT_FIELDS = frozenset(
    {"n", "output_compression", "partial_images", "frame_count", "frame_duration_ms"}
)


@dataclass(frozen=True, slots=True)
class ImageModel:
    family: str  # "dall-e-2" | "dall-e-3" | "gpt"
    prompt_max: int
    n_max: int
    sizes: tuple[str, ...]  # () = flexible WxH
    qualities: tuple[str, ...]
    edits: bool
    fidelities: tuple[str, ...] = ()
    created: int = 1_698_785_189

    @property
    def gpt(self) -> bool:
        return self.family == "gpt"


_GPT1 = ImageModel("gpt", 32000, 10, GPT_SIZES, GPT_QUALITIES, True, ("low", "high"))
_GPT2 = ImageModel("gpt", 32000, 10, (), GPT_QUALITIES, True, ())
MODELS: dict[str, ImageModel] = {
    "dall-e-2": ImageModel("dall-e-2", 1000, 10, DALLE2_SIZES, ("standard",), True),
    "dall-e-3": ImageModel("dall-e-3", 4000, 1, DALLE3_SIZES, ("standard", "hd"), False),
    "gpt-image-1": _GPT1,
    "gpt-image-1.5": _GPT1,
    "chatgpt-image-latest": _GPT1,
    "gpt-image-1-mini": ImageModel("gpt", 32000, 10, GPT_SIZES, GPT_QUALITIES, True, ("low",)),
    "gpt-image-2": _GPT2,
    "gpt-image-2-2026-04-21": _GPT2,
}


class OpenAIError(Exception):
    """An error the fake answers with, in OpenAI's `{"error": {...}}` envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type_,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def unknown_parameter(name: str) -> OpenAIError:
    return OpenAIError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def invalid_value(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, message, param=param, code="invalid_value")


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated request: everything the fake needs to answer it."""

    model: str
    spec: ImageModel
    prompt: str
    n: int
    width: int
    height: int
    quality: str  # resolved: never "auto"
    output_format: str
    background: str  # "transparent" | "opaque"
    b64: bool  # b64_json (always for GPT) or url
    stream: bool
    partial_images: int
    input_fidelity: str

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def coerce_form(form: dict[str, list[str]]) -> dict[str, Any]:
    """Multipart text fields -> typed params (ints from decimal strings, bools from true/false)."""
    params: dict[str, Any] = {}
    for name, values in form.items():
        value: Any = values[-1]
        if name in INT_FIELDS:
            try:
                value = int(value)
            except ValueError:
                message = f"Invalid type for '{name}': expected an integer, but got a string."
                raise OpenAIError(400, message, param=name, code="invalid_type") from None
        elif name == "stream":
            if value.lower() not in ("true", "false"):
                raise OpenAIError(
                    400,
                    "Invalid type for 'stream': expected a boolean, but got a string instead.",
                    param="stream",
                    code="invalid_type",
                )
            value = value.lower() == "true"
        params[name] = value
    return params


def _check_int(params: dict[str, Any], name: str, lo: int, hi: int, default: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise OpenAIError(
            400,
            f"Invalid type for '{name}': expected an integer, but got "
            f"{type(value).__name__} instead.",
            param=name,
            code="invalid_type",
        )
    if value < lo:
        raise invalid_value(
            name,
            f"Invalid '{name}': integer below minimum value. Expected a "
            f"value >= {lo}, but got {value} instead.",
        )
    if value > hi:
        raise invalid_value(
            name,
            f"Invalid '{name}': integer above maximum value. Expected a "
            f"value <= {hi}, but got {value} instead.",
        )
    return value


def _check_enum(params: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in allowed:
        options = ", ".join(f"'{a}'" for a in allowed)
        raise invalid_value(name, f"Invalid value: '{value}'. Supported values are: {options}.")
    return str(value)


def _parse_size(spec: ImageModel, size: Any) -> tuple[int, int]:
    bad = OpenAIError(400, "The size is not supported by this model.", code="invalid_size")
    if size == "auto" and spec.gpt:
        return 1024, 1024
    if spec.sizes and size not in spec.sizes:
        raise bad
    w_s, _, h_s = str(size).partition("x")
    if not (w_s.isdigit() and h_s.isdigit()):
        raise bad
    w, h = int(w_s), int(h_s)
    if not spec.sizes and not (
        w % 16 == 0
        and h % 16 == 0
        and max(w, h) <= 3840
        and max(w, h) <= 3 * min(w, h)
        and 655_360 <= w * h <= 3840 * 2160
    ):
        raise bad
    return w, h


def validate(params: dict[str, Any], *, edit: bool, models: dict[str, ImageModel]) -> Plan:
    """Check a request (nulls already dropped) the way the real API does; return its Plan."""
    allowed = EDIT_FIELDS if edit else GEN_FIELDS
    for name in params:
        if name not in allowed:
            raise unknown_parameter(name)
    prompt = params.get("prompt")
    if prompt is None:
        raise OpenAIError(
            400,
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    if not isinstance(prompt, str):
        raise OpenAIError(
            400,
            "Invalid type for 'prompt': expected a string.",
            param="prompt",
            code="invalid_type",
        )
    model = params.get("model") or ("gpt-image-1" if GPT_ONLY & params.keys() else "dall-e-2")
    spec = models.get(model)
    if spec is None:
        raise OpenAIError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if edit and not spec.edits:
        raise invalid_value(
            "model", f"Invalid value: '{model}'. Value must be 'dall-e-2' or a GPT image model."
        )
    if spec.gpt:
        for name in ("response_format", "style"):
            if name in params:
                raise unknown_parameter(name)
    else:
        for name in sorted(GPT_ONLY & params.keys()):
            if not (name == "stream" and params[name] is False):
                raise unknown_parameter(name)
    if len(prompt) > spec.prompt_max:
        raise OpenAIError(
            400,
            f"Invalid 'prompt': string too long. Expected a string with "
            f"maximum length {spec.prompt_max}, but got a string with length "
            f"{len(prompt)} instead.",
            param="prompt",
            code="string_above_max_length",
        )
    n = _check_int(params, "n", 1, 10, 1)
    if n > spec.n_max:
        raise invalid_value("n", "You must provide n=1 for this model.")
    width, height = _parse_size(spec, params.get("size", "auto" if spec.gpt else "1024x1024"))
    quality = _check_enum(params, "quality", spec.qualities, "auto" if spec.gpt else "standard")
    if spec.family == "dall-e-3":
        _check_enum(params, "style", ("vivid", "natural"), "vivid")
    rformat = _check_enum(params, "response_format", ("url", "b64_json"), "url")
    b64 = spec.gpt or rformat == "b64_json"
    fmt = _check_enum(params, "output_format", ("png", "jpeg", "webp"), "png")
    compression = _check_int(params, "output_compression", 0, 100, 100)
    if compression < 100 and fmt == "png":
        raise invalid_value(
            "output_compression",
            "Compression less than 100 is not supported for PNG output format.",
        )
    background = _check_enum(params, "background", ("transparent", "opaque", "auto"), "auto")
    if background == "transparent" and fmt == "jpeg":
        raise invalid_value(
            "background",
            "Transparent background is not supported for the jpeg output format; use png or webp.",
        )
    _check_enum(params, "moderation", ("low", "auto"), "auto")
    partial_images = _check_int(params, "partial_images", 0, 3, 0)
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(
            400,
            "Invalid type for 'stream': expected a boolean.",
            param="stream",
            code="invalid_type",
        )
    fidelity = "low"
    if "input_fidelity" in params:
        if not spec.fidelities:
            raise invalid_value("input_fidelity", f"input_fidelity is not supported for {model}.")
        fidelity = _check_enum(params, "input_fidelity", spec.fidelities, "low")
    return Plan(
        model=model,
        spec=spec,
        prompt=prompt,
        n=n,
        width=width,
        height=height,
        quality=AUTO_QUALITY if quality == "auto" else quality,
        output_format=fmt,
        background="transparent" if background == "transparent" else "opaque",
        b64=b64,
        stream=stream,
        partial_images=partial_images,
        input_fidelity=fidelity,
    )


def output_tokens_per_image(quality: str, width: int, height: int) -> int:
    table = OUTPUT_TOKENS[quality]
    size = f"{width}x{height}"
    if size in table:
        return table[size]
    return round(table["1024x1024"] * width * height / (1024 * 1024))


def usage(
    plan: Plan, *, images: int, input_images: int = 0, partials: int = 0, with_input: bool = True
) -> dict[str, Any]:
    """The `usage` object for `images` output images of `plan`."""
    text = max(1, math.ceil(len(plan.prompt) / 4)) if with_input else 0
    image_in = input_images * INPUT_IMAGE_TOKENS[plan.input_fidelity] if with_input else 0
    out = images * output_tokens_per_image(plan.quality, plan.width, plan.height)
    out += partials * PARTIAL_IMAGE_TOKENS
    return {
        "input_tokens": text + image_in,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image_in},
        "output_tokens": out,
        "output_tokens_details": {"image_tokens": out, "text_tokens": 0},
        "total_tokens": text + image_in + out,
    }
