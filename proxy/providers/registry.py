"""Which provider serves a model: its own when it has credentials, else the placeholder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies.catalog import ModelSpec
from policies.errors import NoRoute
from proxy.ports import Provider

__all__ = ["ProviderRegistry"]


@dataclass(frozen=True, slots=True)
class ProviderRegistry:
    providers: Mapping[str, Provider]
    placeholder: Provider | None = None

    def choose(self, spec: ModelSpec) -> Provider:
        provider = self.providers.get(spec.provider)
        if provider is not None and provider.has_credentials():
            return provider
        if self.placeholder is not None:
            return self.placeholder
        raise NoRoute(
            f"No provider can serve '{spec.name}': the '{spec.provider}' provider has no "
            f"credentials. Set [providers.{spec.provider}] in the config, or enable "
            "[providers.placeholder] to answer offline.",
            param="model",
        )

    def all(self) -> tuple[Provider, ...]:
        extra = (self.placeholder,) if self.placeholder is not None else ()
        return (*self.providers.values(), *extra)

    async def aclose(self) -> None:
        for provider in self.all():
            await provider.aclose()
