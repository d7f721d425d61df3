"""The configured providers, and the placeholder when it answers everything."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.ports import Provider

__all__ = ["ProviderRegistry"]


@dataclass(frozen=True, slots=True)
class ProviderRegistry:
    providers: Mapping[str, Provider]
    placeholder: Provider | None = None

    @property
    def placeholder_only(self) -> bool:
        """The placeholder answers every request (enabled, or no real provider is ready)."""
        return self.placeholder is not None

    def ready(self) -> frozenset[str]:
        return frozenset(n for n, p in self.providers.items() if p.has_credentials())

    def get(self, name: str) -> Provider:
        if self.placeholder is not None:
            return self.placeholder
        return self.providers[name]

    def all(self) -> tuple[Provider, ...]:
        extra = (self.placeholder,) if self.placeholder is not None else ()
        return (*self.providers.values(), *extra)

    async def aclose(self) -> None:
        for provider in self.all():
            await provider.aclose()
