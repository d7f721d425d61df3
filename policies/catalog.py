"""The model catalog as data: families of request rules, models, aliases.

A *family* holds the request rules OpenAI applies to a kind of model (prompt length, sizes,
qualities, which fields it takes). A *model* names a family, the provider that serves it and
its upstream id. Aliases (dated snapshots) resolve to a model before the request key is taken,
so an alias and its model share cache entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from policies.errors import ModelNotFound

__all__ = [
    "DEFAULT_FAMILIES",
    "VIRTUAL",
    "Catalog",
    "Family",
    "ModelSpec",
    "Price",
]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    prompt_max: int
    n_max: int
    sizes: tuple[str, ...]  # () means "any WxH within the flexible bounds below"
    default_size: str
    qualities: tuple[str, ...]
    default_quality: str
    operations: tuple[str, ...] = ("generate",)
    styles: tuple[str, ...] = ()
    default_style: str | None = None
    gpt_fields: bool = False  # background, output_format, output_compression, moderation, stream
    output_formats: tuple[str, ...] = ("png",)
    edit_images_max: int = 1
    edit_image_max_bytes: int = 4 * 1024 * 1024
    edit_formats: tuple[str, ...] = ("png",)
    edit_square_only: bool = True
    input_fidelities: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()  # newer fields this family takes (complexity, svg, ...)
    flexible_multiple: int = 16
    flexible_max_edge: int = 3840
    flexible_max_pixels: int = 3840 * 2160
    flexible_min_pixels: int = 0
    # How its models answer, and how they are asked (read by the router, `translate` and the
    # providers, so that a new family is data, not code):
    default_response_format: Literal["url", "b64_json"] = "b64_json"  # when none is asked
    revises_prompt: bool = False  # answers carry `revised_prompt`, the prompt that was drawn
    max_aspect_ratio: float | None = 2.0  # widest size the router gives its models; None: any
    nearest_size: bool = False  # another model's size is made at the nearest of `sizes`, fitted
    # A quality asked of another model -> the quality asked of this one ("*": any other;
    # a quality not listed passes as it is).
    quality_map: tuple[tuple[str, str], ...] = (("*", "auto"),)
    # When another model serves a request made for this family:
    style_phrases: tuple[tuple[str, str], ...] = ()  # style -> words added to the prompt
    variation_prompt: str = ""  # a variation becomes an edit with this prompt ("" : it stays)


VIRTUAL = "virtual"  # the family of `auto` and the use cases: the router picks the model
_GPT_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
_GPT_QUALITIES = ("low", "medium", "high", "auto")
_GPT_QUALITY_MAP = (("standard", "medium"), ("hd", "high"))

DEFAULT_FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        "dall-e-2": Family(
            name="dall-e-2",
            prompt_max=1000,
            n_max=10,
            sizes=("256x256", "512x512", "1024x1024"),
            default_size="1024x1024",
            qualities=("standard",),
            default_quality="standard",
            operations=("generate", "edit", "variation"),
            default_response_format="url",
            max_aspect_ratio=None,
            quality_map=(("*", "standard"),),
            variation_prompt="A variation of this image: same subject, new details.",
        ),
        "dall-e-3": Family(
            name="dall-e-3",
            prompt_max=4000,
            n_max=1,
            sizes=("1024x1024", "1792x1024", "1024x1792"),
            default_size="1024x1024",
            qualities=("standard", "hd"),
            default_quality="standard",
            styles=("vivid", "natural"),
            default_style="vivid",
            default_response_format="url",
            revises_prompt=True,
            max_aspect_ratio=None,
            quality_map=(
                ("low", "standard"),
                ("medium", "standard"),
                ("high", "hd"),
                ("auto", "standard"),
            ),
            style_phrases=(
                ("vivid", "Style: vivid, hyper-real and dramatic."),
                ("natural", "Style: natural, realistic and less hyper-real."),
            ),
        ),
        "gpt-image": Family(
            name="gpt-image",
            prompt_max=32000,
            n_max=10,
            sizes=_GPT_SIZES,
            default_size="auto",
            qualities=_GPT_QUALITIES,
            default_quality="auto",
            operations=("generate", "edit"),
            gpt_fields=True,
            output_formats=("png", "jpeg", "webp"),
            edit_images_max=16,
            edit_image_max_bytes=50 * 1024 * 1024,
            edit_formats=("png", "jpeg", "webp"),
            edit_square_only=False,
            input_fidelities=("high", "low"),
            nearest_size=True,
            quality_map=_GPT_QUALITY_MAP,
        ),
        "gpt-image-2": Family(
            name="gpt-image-2",
            prompt_max=32000,
            n_max=10,
            sizes=(),
            default_size="auto",
            qualities=(*_GPT_QUALITIES, "xhigh", "max"),
            default_quality="auto",
            operations=("generate", "edit"),
            gpt_fields=True,
            output_formats=("png", "jpeg", "webp", "gif", "svg"),
            edit_images_max=16,
            edit_image_max_bytes=50 * 1024 * 1024,
            edit_formats=("png", "jpeg", "webp"),
            edit_square_only=False,
            extras=("complexity", "frame_count", "frame_duration_ms", "svg"),
            max_aspect_ratio=None,
            quality_map=_GPT_QUALITY_MAP,
        ),
        # Replicate, fal.ai and self-hosted diffusion models: OpenAI sizes map to the
        # model's aspect ratios (each model lists the sizes it takes).
        "diffusion": Family(
            name="diffusion",
            prompt_max=10_000,
            n_max=10,
            sizes=("auto", "1024x1024"),
            default_size="auto",
            qualities=("auto", "standard"),
            default_quality="auto",
            operations=("generate", "edit"),
            output_formats=("png", "jpeg", "webp"),
            edit_images_max=1,
            edit_image_max_bytes=50 * 1024 * 1024,
            edit_formats=("png", "jpeg", "webp"),
            edit_square_only=False,
        ),
        # auto and the use cases: the router picks a concrete model per request.
        "virtual": Family(
            name="virtual",
            prompt_max=32_000,
            n_max=10,
            sizes=(
                "auto",
                "256x256",
                "512x512",
                "1024x1024",
                "1536x1024",
                "1024x1536",
                "1792x1024",
                "1024x1792",
            ),
            default_size="auto",
            qualities=("auto", "low", "medium", "high", "standard", "hd"),
            default_quality="auto",
            operations=("generate", "edit"),
            gpt_fields=True,
            output_formats=("png", "jpeg", "webp"),
            edit_images_max=16,
            edit_image_max_bytes=50 * 1024 * 1024,
            edit_formats=("png", "jpeg", "webp"),
            edit_square_only=False,
            input_fidelities=("high", "low"),
        ),
    }
)


@dataclass(frozen=True, slots=True)
class Price:
    """A price formula in micro-USD. Every part that is set adds up."""

    per_image: Mapping[str, int] = field(default_factory=dict)  # "quality:size", size, quality, "*"
    per_megapixel: int = 0
    tokens_text_in: int = 0  # per 1M tokens
    tokens_image_in: int = 0
    tokens_image_out: int = 0
    output_tokens: Mapping[str, int] = field(default_factory=dict)  # "quality:size" -> tokens
    gpu_hour: int = 0  # self-hosted: micro-USD per GPU-hour
    gpu_seconds_per_image: float = 0.0  # for quotes before the GPU time is known


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    family: str
    provider: str = ""
    upstream: str = ""
    owned_by: str = "imagegate"
    aliases: tuple[str, ...] = ()
    description: str = ""
    retired: bool = False
    successor: str | None = None
    available: bool = True
    unavailable_reason: str = ""
    needs: tuple[str, ...] = ()  # virtual models: strengths a candidate must have
    sizes: tuple[str, ...] = ()  # overrides the family's sizes
    aspect_ratios: Mapping[str, str] = field(default_factory=dict)
    max_per_call: int = 10
    edits: bool = False
    masks: bool = False
    seed: bool = False
    transparent: bool = False
    formats: tuple[str, ...] = ("png",)
    strengths: tuple[str, ...] = ()
    licence: str = "commercial"
    safety_param: str | None = None
    safety_value: int | str | None = None
    input_fidelities: tuple[str, ...] | None = None  # None: the family's
    price: Price = field(default_factory=Price)
    # The family itself, set by `Catalog.build` (so providers read its rules without the catalog).
    family_rules: Family | None = field(default=None, compare=False, repr=False)

    @property
    def virtual(self) -> bool:
        return self.family == VIRTUAL

    @property
    def rules(self) -> Family:
        """The family's rules: the catalog's, or a built-in family's for a spec made by hand."""
        return self.family_rules or DEFAULT_FAMILIES[self.family]


@dataclass(frozen=True, slots=True)
class Catalog:
    models: Mapping[str, ModelSpec]
    families: Mapping[str, Family] = field(default_factory=lambda: DEFAULT_FAMILIES)
    aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, models: Iterable[ModelSpec], families: Mapping[str, Family] = DEFAULT_FAMILIES
    ) -> Catalog:
        by_name: dict[str, ModelSpec] = {}
        aliases: dict[str, str] = {}
        for spec in models:
            if spec.family not in families:
                raise ValueError(f"model {spec.name!r} names unknown family {spec.family!r}")
            by_name[spec.name] = replace(spec, family_rules=families[spec.family])
            for alias in spec.aliases:
                aliases[alias] = spec.name
        return cls(
            models=MappingProxyType(by_name),
            families=families,
            aliases=MappingProxyType(aliases),
        )

    def resolve(self, name: str) -> ModelSpec:
        canonical = self.aliases.get(name, name)
        spec = self.models.get(canonical)
        if spec is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist. GET /v1/models lists the models "
                "this gateway serves.",
                param="model",
            )
        return spec

    def family_of(self, spec: ModelSpec) -> Family:
        family = self.families[spec.family]
        if spec.sizes:
            return replace(family, sizes=spec.sizes)
        if spec.aspect_ratios:
            return replace(family, sizes=tuple(spec.aspect_ratios))
        return family

    def names(self) -> tuple[str, ...]:
        """Every name a client may use: models, then aliases."""
        return (*self.models, *self.aliases)
