"""The Replicate fake's models: input schemas, output shapes, sizes (per WIRE.md §3.3).

| model                                   | output        | images               | default fmt |
|-----------------------------------------|---------------|----------------------|-------------|
| black-forest-labs/flux-schnell          | list of URIs  | num_outputs 1-4      | webp        |
| black-forest-labs/flux-dev              | list of URIs  | num_outputs 1-4      | webp        |
| black-forest-labs/flux-1.1-pro          | one URI (str) | 1                    | webp        |
| stability-ai/stable-diffusion-3.5-large | list of one   | 1 (no num_outputs)   | webp        |
| ideogram-ai/ideogram-v2                 | one URI (str) | 1                    | png         |

Pixel sizes (`ASPECT_RATIOS`, the sizes FLUX really renders at):

    1:1 1024x1024   16:9 1344x768   9:16 768x1344   21:9 1536x640   9:21 640x1536
    3:2 1216x832    2:3 832x1216    4:3 1152x896    3:4 896x1152    4:5 896x1088
    5:4 1088x896    16:10 1280x800  10:16 800x1280  3:1 1536x512    1:3 512x1536

flux `megapixels="0.25"` halves both sides (rounded to 16); flux-1.1-pro `aspect_ratio="custom"`
uses `width`/`height` (256-1440, rounded to a multiple of 32; 1024 when missing); ideogram's
`resolution` (`WxH`, default the string "None") overrides its aspect ratio.

Inputs are validated like Replicate's (422 problem with `invalid_fields`): required `prompt`,
types, enums (so `output_format="jpeg"` is refused: it is `jpg`), minimum/maximum. Unknown input
keys are ignored, as Replicate does (so `num_outputs` sent to SD 3.5 still yields one image).
`predict_time` in metrics is simulated: `PREDICT_SECONDS` per image, not wall time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ASPECT_RATIOS",
    "MODELS",
    "InputField",
    "ReplicateModel",
    "check_input",
    "openapi_schema",
    "out_size",
]

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "16:10": (1280, 800),
    "10:16": (800, 1280),
    "3:1": (1536, 512),
    "1:3": (512, 1536),
}
FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
IDEOGRAM_RATIOS = (
    "1:1",
    "16:9",
    "9:16",
    "4:3",
    "3:4",
    "3:2",
    "2:3",
    "16:10",
    "10:16",
    "3:1",
    "1:3",
)
IDEOGRAM_RESOLUTIONS = (
    "None",
    "1024x1024",
    "1344x768",
    "768x1344",
    "1280x800",
    "800x1280",
    "1536x640",
    "640x1536",
    "1152x896",
    "896x1152",
    "1536x512",
    "512x1536",
)
FORMATS = ("webp", "jpg", "png")


@dataclass(frozen=True, slots=True)
class InputField:
    type: str  # "string" | "integer" | "number" | "boolean"
    default: Any = None
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    uri: bool = False


@dataclass(frozen=True, slots=True)
class ReplicateModel:
    owner: str
    name: str
    inputs: dict[str, InputField]
    list_output: bool
    default_format: str
    predict_seconds: float  # simulated GPU seconds per output image
    cog_version: str = "0.9.25"

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def version(self) -> str:
        """A stable 64-hex version id."""
        return hashlib.sha256(f"version:{self.ref}".encode()).hexdigest()


def _common(ratios: tuple[str, ...], quality: int = 80) -> dict[str, InputField]:
    return {
        "prompt": InputField("string"),
        "aspect_ratio": InputField("string", "1:1", ratios),
        "seed": InputField("integer"),
        "output_format": InputField("string", "webp", FORMATS),
        "output_quality": InputField("integer", quality, None, 0, 100),
    }


_FLUX_FAST = {
    "num_outputs": InputField("integer", 1, None, 1, 4),
    "disable_safety_checker": InputField("boolean", False),
    "go_fast": InputField("boolean", True),
    "megapixels": InputField("string", "1", ("1", "0.25")),
}
_SCHNELL = ReplicateModel(
    "black-forest-labs",
    "flux-schnell",
    {
        **_common(FLUX_RATIOS),
        **_FLUX_FAST,
        "num_inference_steps": InputField("integer", 4, None, 1, 4),
    },
    list_output=True,
    default_format="webp",
    predict_seconds=0.6,
)
_DEV = ReplicateModel(
    "black-forest-labs",
    "flux-dev",
    {
        **_common(tuple(r for r in FLUX_RATIOS if r not in ("3:4", "4:3"))),
        **_FLUX_FAST,
        "image": InputField("string", uri=True),
        "prompt_strength": InputField("number", 0.8, None, 0, 1),
        "num_inference_steps": InputField("integer", 50, None, 1, 50),
        "guidance": InputField("number", 3.5, None, 0, 10),
    },
    list_output=True,
    default_format="webp",
    predict_seconds=2.9,
)
_PRO = ReplicateModel(
    "black-forest-labs",
    "flux-1.1-pro",
    {
        **_common((*FLUX_RATIOS, "custom")),
        "image_prompt": InputField("string", uri=True),
        "width": InputField("integer", None, None, 256, 1440),
        "height": InputField("integer", None, None, 256, 1440),
        "safety_tolerance": InputField("integer", 2, None, 1, 6),
        "prompt_upsampling": InputField("boolean", False),
    },
    list_output=False,
    default_format="webp",
    predict_seconds=4.3,
)
_SD35 = ReplicateModel(
    "stability-ai",
    "stable-diffusion-3.5-large",
    {
        **_common(FLUX_RATIOS, quality=90),
        "negative_prompt": InputField("string", ""),
        "cfg": InputField("number", 3.5, None, 0, 20),
        "image": InputField("string", uri=True),
        "prompt_strength": InputField("number", 0.85, None, 0, 1),
        "steps": InputField("integer", 35, None, 1, 50),
    },
    list_output=True,
    default_format="webp",
    predict_seconds=5.5,
)
_IDEOGRAM = ReplicateModel(
    "ideogram-ai",
    "ideogram-v2",
    {
        "prompt": InputField("string"),
        "negative_prompt": InputField("string"),
        "aspect_ratio": InputField("string", "1:1", IDEOGRAM_RATIOS),
        "resolution": InputField("string", "None", IDEOGRAM_RESOLUTIONS),
        "magic_prompt_option": InputField("string", "Auto", ("Auto", "On", "Off")),
        "image": InputField("string", uri=True),
        "mask": InputField("string", uri=True),
        "style_type": InputField(
            "string",
            "None",
            ("None", "Auto", "General", "Realistic", "Design", "Render 3D", "Anime"),
        ),
        "seed": InputField("integer", None, None, 0, 2147483647),
    },
    list_output=False,
    default_format="png",
    predict_seconds=7.1,
)
MODELS: dict[str, ReplicateModel] = {m.ref: m for m in (_SCHNELL, _DEV, _PRO, _SD35, _IDEOGRAM)}

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
_JSON_TYPES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    list: "array",
    dict: "object",
}


def check_input(model: ReplicateModel, data: dict[str, Any]) -> list[dict[str, str]]:
    """Replicate-style `invalid_fields` for `data` (empty when valid)."""
    problems: list[dict[str, str]] = []

    def bad(kind: str, name: str, description: str) -> None:
        problems.append({"type": kind, "field": f"input.{name}", "description": description})

    if "prompt" not in data:
        bad("required", "prompt", "prompt is required")
    for name, value in data.items():
        number: Any = value
        spec = model.inputs.get(name)
        if spec is None:
            continue  # unknown inputs are ignored
        types = _TYPES[spec.type]
        if not isinstance(value, types) or (isinstance(value, bool) and spec.type != "boolean"):
            given = _JSON_TYPES.get(type(value), "object")
            bad("invalid_type", name, f"Invalid type. Expected: {spec.type}, given: {given}")
        elif spec.enum is not None and value not in spec.enum:
            options = ", ".join(f'"{option}"' for option in spec.enum)
            bad("enum", name, f"{name} must be one of the following: {options}")
        elif spec.minimum is not None and number < spec.minimum:
            bad("number_gte", name, f"Must be greater than or equal to {spec.minimum:g}")
        elif spec.maximum is not None and number > spec.maximum:
            bad("number_lte", name, f"Must be less than or equal to {spec.maximum:g}")
    return problems


def _round(value: int, step: int) -> int:
    return max(step, round(value / step) * step)


def out_size(model: ReplicateModel, data: dict[str, Any]) -> tuple[int, int]:
    """The pixel size a (valid) input renders at."""
    resolution = data.get("resolution", "None")
    if model.name == "ideogram-v2" and resolution != "None":
        w, _, h = resolution.partition("x")
        return int(w), int(h)
    ratio = data.get("aspect_ratio", "1:1")
    if ratio == "custom":
        return _round(data.get("width") or 1024, 32), _round(data.get("height") or 1024, 32)
    width, height = ASPECT_RATIOS[ratio]
    if data.get("megapixels") == "0.25" and "megapixels" in model.inputs:
        return _round(width // 2, 16), _round(height // 2, 16)
    return width, height


def openapi_schema(model: ReplicateModel) -> dict[str, Any]:
    """A cog-style OpenAPI schema: Input from `inputs`, Output a URI or an array of URIs."""
    props: dict[str, Any] = {}
    for order, (name, spec) in enumerate(model.inputs.items()):
        prop: dict[str, Any] = {
            "type": spec.type,
            "title": name.replace("_", " ").title(),
            "x-order": order,
        }
        for key, value in (
            ("default", spec.default),
            ("enum", spec.enum),
            ("minimum", spec.minimum),
            ("maximum", spec.maximum),
        ):
            if value is not None:
                prop[key] = list(value) if isinstance(value, tuple) else value
        if spec.uri:
            prop["format"] = "uri"
        props[name] = prop
    uri = {"type": "string", "format": "uri"}
    output = {"type": "array", "items": uri} if model.list_output else dict(uri)
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": {
                    "type": "object",
                    "title": "Input",
                    "required": ["prompt"],
                    "properties": props,
                },
                "Output": {**output, "title": "Output"},
            }
        },
    }
