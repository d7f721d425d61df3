"""The ports the service talks to. Each is a small Protocol with one contract test suite."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from policies.catalog import ModelSpec
from policies.models import Entry, GeneratedImage, ImageRequest
from policies.pricing import Usage

__all__ = [
    "BlobFile",
    "BlobStore",
    "Clock",
    "EntryStore",
    "Provider",
    "ProviderCall",
    "ProviderResult",
    "StoreStats",
]


class Clock(Protocol):
    def __call__(self) -> float:
        """Seconds since the epoch (wall clock); tests inject a manual one."""
        ...


@dataclass(frozen=True, slots=True)
class BlobFile:
    """A verified blob on disk that can be sent without reading it into memory."""

    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    items: int
    bytes: int
    evictions: int = 0
    healed: int = 0


class BlobStore(Protocol):
    """sha256 -> image bytes. Immutable, deduplicated; never returns bytes that don't hash
    to their address (a corrupt blob is deleted and reported as missing)."""

    def put(self, data: bytes) -> str:
        """Store `data`; return its sha256 hex. Idempotent and atomic."""
        ...

    def get(self, sha256: str) -> bytes | None: ...

    def open(self, sha256: str) -> BlobFile | None:
        """A verified file for `sha256`, or None (missing, corrupt, or not file-backed)."""
        ...

    def ping(self) -> None:
        """Raise if the store is unreachable."""
        ...

    def stats(self) -> StoreStats: ...


class EntryStore(Protocol):
    """(request key, index) -> Entry."""

    def get(self, key: str, index: int) -> Entry | None: ...

    def put(self, key: str, index: int, entry: Entry, *, ttl: float | None = None) -> None: ...

    def delete(self, key: str, index: int) -> None: ...

    def ping(self) -> None: ...

    def stats(self) -> StoreStats: ...


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One upstream call: make `len(indexes)` images for `request`, which is already
    translated for `model` (its name, size, quality and prompt are what goes upstream)."""

    request: ImageRequest
    model: ModelSpec
    indexes: tuple[int, ...]
    uploads: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # sha256 -> bytes


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """What came back. Cost: `cost_micros` when the provider knows it exactly (the
    placeholder: 0); else the catalog's formula over `usage` (tokens) or `gpu_seconds`."""

    images: tuple[GeneratedImage, ...]
    cost_micros: int | None = None
    usage: Usage | None = None
    gpu_seconds: float | None = None


class Provider(Protocol):
    name: str

    def has_credentials(self) -> bool: ...

    async def generate(self, call: ProviderCall) -> ProviderResult:
        """Make the images or raise a `policies.errors.ProviderError`."""
        ...

    async def aclose(self) -> None: ...
