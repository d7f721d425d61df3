"""Build the configured providers from `[providers.<name>]` by their kind."""

from __future__ import annotations

from proxy.config import ProviderSettings, Settings
from proxy.ports import Provider

__all__ = ["build_providers"]


def build_providers(settings: Settings) -> dict[str, Provider]:
    return {
        name: _build(conf)
        for name, conf in settings.providers.items()
        if conf.kind != "placeholder" and conf.enabled is not False
    }


def _build(conf: ProviderSettings) -> Provider:
    if conf.kind == "openai":
        from proxy.providers.openai_images import OpenAIImagesProvider

        return OpenAIImagesProvider(conf)
    if conf.kind == "replicate":
        from proxy.providers.replicate import ReplicateProvider

        return ReplicateProvider(conf)
    if conf.kind == "fal":
        from proxy.providers.fal import FalProvider

        return FalProvider(conf)
    raise ValueError(f"unknown provider kind {conf.kind!r}")  # config validated it already
