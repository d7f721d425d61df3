"""API calls follow redirects only within their own origin (scheme, host and port).

The SDKs' httpx clients would replay a request (a POST with the provider's key) to wherever a
307 points. `same_origin_only(provider)` is an httpx response hook (it works for httpx and the
openai SDK's httpx2 alike) that raises a fallback-able `ProviderUnavailable` on a redirect to
another origin before the client follows it, so the request is never sent there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from policies.errors import ProviderUnavailable

__all__ = ["REDIRECT_REFUSED", "same_origin_only"]

REDIRECT_REFUSED: Final = "upstream_redirect_refused"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def origin(url: Any) -> tuple[str, str, int]:
    """(scheme, host, port) of an httpx (or httpx2) URL, the port made explicit."""
    scheme = str(url.scheme).lower()
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(scheme, 0)
    return scheme, str(url.host).lower(), int(port)


def refused(provider: str, target: tuple[str, str, int]) -> ProviderUnavailable:
    scheme, host, port = target
    return ProviderUnavailable(
        f"The upstream provider '{provider}' redirected the gateway to another origin "
        f"({scheme}://{host}:{port}); the request was not sent there.",
        code=REDIRECT_REFUSED,
    )


def same_origin_only(provider: str) -> Callable[[Any], Awaitable[None]]:
    """A response hook: a redirect whose target is on another origin raises."""

    async def hook(response: Any) -> None:
        if not response.has_redirect_location:
            return
        source = response.request.url
        try:
            target = source.join(response.headers["location"])
        except Exception:  # an unreadable Location (httpx or httpx2 InvalidURL)
            raise ProviderUnavailable(
                f"The upstream provider '{provider}' redirected to an invalid URL.",
                code=REDIRECT_REFUSED,
            ) from None
        if origin(target) != origin(source):
            raise refused(provider, origin(target))

    return hook
