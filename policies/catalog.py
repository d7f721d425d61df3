"""The model catalog as data: families of request rules, models, aliases.

A *family* holds the request rules OpenAI applies to a kind of model (prompt length, sizes,
qualities, which fields it takes). A *model* names a family, the provider that serves it and
its upstream id. Aliases (dated snapshots) resolve to a model before the request key is taken,
so an alias and its model share cache entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from policies.errors import ModelNotFound

__all__ = [
    "DEFAULT_FAMILIES",
    "DEFAULT_MODELS",
    "Catalog",
    "Family",
    "ModelSpec",
    "default_catalog",
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
    revises_prompt: bool = False


_GPT_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
_GPT_QUALITIES = ("low", "medium", "high", "auto")

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
            revises_prompt=True,
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
        ),
    }
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    family: str
    provider: str
    upstream: str
    owned_by: str = "openai"
    aliases: tuple[str, ...] = ()
    description: str = ""
    retired: bool = False
    successor: str | None = None
    input_fidelities: tuple[str, ...] | None = None  # None: the family's


def _openai(name: str, family: str, **kw: object) -> ModelSpec:
    return ModelSpec(name=name, family=family, provider="openai", upstream=name, **kw)  # type: ignore[arg-type]


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    _openai(
        "gpt-image-1-mini",
        "gpt-image",
        input_fidelities=("low",),
        description="Cheapest GPT image model",
    ),
    _openai("gpt-image-1.5", "gpt-image", description="GPT image model, strong text rendering"),
    _openai(
        "gpt-image-2",
        "gpt-image-2",
        aliases=("gpt-image-2-2026-04-21",),
        description="Flexible sizes up to 3840x2160",
    ),
    _openai("chatgpt-image-latest", "gpt-image-2", description="The model ChatGPT uses"),
    _openai(
        "dall-e-2",
        "dall-e-2",
        retired=True,
        successor="gpt-image-1-mini",
        description="Retired 2026-05-12; served by its successor",
    ),
    _openai(
        "dall-e-3",
        "dall-e-3",
        retired=True,
        successor="gpt-image-1.5",
        description="Retired 2026-05-12; served by its successor",
    ),
    _openai(
        "gpt-image-1",
        "gpt-image",
        retired=True,
        successor="gpt-image-1.5",
        description="Shut down 2026-10-23; served by its successor",
    ),
)


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
            by_name[spec.name] = spec
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
        return self.families[spec.family]

    def names(self) -> tuple[str, ...]:
        """Every name a client may use: models, then aliases."""
        return (*self.models, *self.aliases)


def default_catalog() -> Catalog:
    return Catalog.build(DEFAULT_MODELS)
