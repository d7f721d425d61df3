"""Frozen values the core decides over: requests, uploads, entries, provider output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CONTENT_TYPES",
    "Delivery",
    "Entry",
    "GeneratedImage",
    "ImageFormat",
    "ImageRequest",
    "Operation",
    "ParsedRequest",
    "UploadInfo",
]

Operation = Literal["generate", "edit", "variation"]
ImageFormat = Literal["png", "jpeg", "webp", "gif", "svg"]

CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """What the shell learned about one uploaded file by sniffing its bytes."""

    sha256: str
    format: str  # "png" | "jpeg" | "webp" | "gif" | "unknown"
    width: int
    height: int
    nbytes: int
    has_alpha: bool = False


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """A normalized request: every field that can change the pixels, with defaults filled.

    Two wire bodies that normalize to equal `ImageRequest`s have the same request key.
    `n` is not here: a request for n images is n entries (indexes 0..n-1) of one key.
    """

    operation: Operation
    model: str
    prompt: str | None
    size: str
    quality: str
    output_format: ImageFormat
    style: str | None = None
    background: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    images: tuple[str, ...] = ()
    mask: str | None = None
    seed: int | None = None
    # Newer, rarely used fields (complexity, frame_count, svg, ...) as sorted (name, json) pairs.
    extras: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the client wants its answer: none of this changes the pixels."""

    n: int = 1
    response_format: Literal["url", "b64_json"] = "b64_json"
    stream: bool = False
    partial_images: int = 0

    @property
    def carries_images(self) -> bool:
        """The answer holds the images' base64 (`b64_json`, or any streamed answer), not URLs."""
        return self.response_format != "url" or self.stream


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    request: ImageRequest
    delivery: Delivery
    # The model name as the client wrote it (before alias resolution), for echo and logs.
    requested_model: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached image of one request key at one index."""

    blob: str  # sha256 hex of the image bytes
    format: ImageFormat
    width: int
    height: int
    model: str
    provider: str
    cost_micros: int
    created: float
    revised_prompt: str | None = None
    prompt: str | None = None  # the normalized prompt, for the dashboard's gallery

    def to_json(self) -> dict[str, object]:
        return {
            "blob": self.blob,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "provider": self.provider,
            "cost_micros": self.cost_micros,
            "created": self.created,
            "revised_prompt": self.revised_prompt,
            "prompt": self.prompt,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> Entry:
        fmt = raw["format"]
        assert fmt in CONTENT_TYPES
        revised = raw.get("revised_prompt")
        prompt = raw.get("prompt")
        return cls(
            blob=str(raw["blob"]),
            format=fmt,  # type: ignore[arg-type]  # checked just above
            width=int(raw["width"]),  # type: ignore[call-overload]
            height=int(raw["height"]),  # type: ignore[call-overload]
            model=str(raw["model"]),
            provider=str(raw["provider"]),
            cost_micros=int(raw["cost_micros"]),  # type: ignore[call-overload]
            created=float(raw["created"]),  # type: ignore[arg-type]
            revised_prompt=None if revised is None else str(revised),
            prompt=None if prompt is None else str(prompt),
        )


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One image as a provider returned it, before the gateway checked and stored it."""

    data: bytes = field(repr=False)
    revised_prompt: str | None = None
