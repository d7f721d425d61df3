"""Fetch a provider's output files without trusting the provider: `data:` URIs, or http(s)
URLs on an allow-list of hosts, with a size cap and redirects checked hop by hop.

Rules for a URL (the first one and every redirect target):
- the host must match the allow-list: an exact name (`replicate.delivery`, `127.0.0.1`) or
  a leading wildcard (`*.replicate.delivery`, which matches sub-domains only);
- `https` always; plain `http` only for a host listed exactly (an operator's explicit choice);
- no user-info (`user:pass@host`), and no private, loopback, link-local or otherwise
  non-public IP literal unless that exact address is listed;
- at most `max_redirects` redirects, each re-checked; the body is streamed and abandoned as
  soon as it passes `max_bytes`.
The downloads never carry a provider's credentials: this is a separate client with no auth.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import unquote_to_bytes

import httpx

from policies.errors import ProviderError, ProviderTimeout, ProviderUnavailable

__all__ = ["DEFAULT_MAX_REDIRECTS", "Downloader", "HostAllowList", "decode_data_uri"]

DEFAULT_MAX_REDIRECTS: Final = 3
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_HEADERS: Final = {"User-Agent": "imagegate", "Accept": "image/*"}


def _norm(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


class HostAllowList:
    """Exact host names and `*.suffix` patterns, case-insensitive."""

    def __init__(self, patterns: Iterable[str]) -> None:
        cleaned = [_norm(p) for p in patterns if p.strip()]
        self.exact: frozenset[str] = frozenset(p for p in cleaned if not p.startswith("*."))
        self.suffixes: tuple[str, ...] = tuple(p[1:] for p in cleaned if p.startswith("*."))

    def explicit(self, host: str) -> bool:
        """Listed by its exact name (which also allows http and private addresses)."""
        return _norm(host) in self.exact

    def allows(self, host: str) -> bool:
        host = _norm(host)
        return host in self.exact or any(host.endswith(s) for s in self.suffixes)


def _non_public(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(_norm(host))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _refused(provider: str, why: str) -> ProviderError:
    return ProviderError(
        f"The upstream provider '{provider}' returned an image URL the gateway will not "
        f"fetch: {why}.",
        code="upstream_download_refused",
    )


def _too_large(provider: str, max_bytes: int) -> ProviderError:
    return ProviderError(
        f"The upstream provider '{provider}' returned an image larger than "
        f"{max_bytes // (1024 * 1024)} MiB (max_image_mb).",
        code="upstream_image_too_large",
    )


def decode_data_uri(uri: str, *, max_bytes: int, provider: str) -> bytes:
    """The bytes of a `data:[<type>][;base64],<data>` URI, within `max_bytes`."""
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise _refused(provider, "a data: URI without a comma")
    if header.lower().endswith(";base64"):
        payload = "".join(payload.split())
        if len(payload) * 3 // 4 > max_bytes + 2:
            raise _too_large(provider, max_bytes)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _refused(provider, "a data: URI that is not valid base64") from None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_large(provider, max_bytes)
    return data


class Downloader:
    """One httpx client for one provider's output files (redirects followed by hand)."""

    def __init__(
        self,
        provider: str,
        hosts: Iterable[str],
        *,
        max_bytes: int,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
    ) -> None:
        self.provider = provider
        self.hosts = HostAllowList(hosts)
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers=_HEADERS,
        )

    async def fetch(self, url: str) -> bytes:
        """The file at `url` (a `data:` URI or an allowed http(s) URL)."""
        if url[:5].lower() == "data:":
            return decode_data_uri(url, max_bytes=self.max_bytes, provider=self.provider)
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise _refused(self.provider, "not a valid URL") from None
        for _ in range(self.max_redirects + 1):
            self.check(target)
            data, target_or_none = await self._get_once(target)
            if data is not None:
                return data
            assert target_or_none is not None
            target = target_or_none
        raise _refused(self.provider, f"more than {self.max_redirects} redirects")

    async def fetch_all(self, urls: Sequence[str]) -> tuple[bytes, ...]:
        """Every file, fetched concurrently; the first failure (in order) is raised once all
        have settled, so no download is left running."""
        fetched = await asyncio.gather(*(self.fetch(url) for url in urls), return_exceptions=True)
        for item in fetched:
            if isinstance(item, BaseException):
                raise item
        return tuple(item for item in fetched if isinstance(item, bytes))

    def check(self, url: httpx.URL) -> None:
        """Raise unless `url` may be fetched under this downloader's rules."""
        host = url.host
        if url.scheme not in ("http", "https") or not host:
            raise _refused(self.provider, f"scheme '{url.scheme}' is not http(s)")
        if url.userinfo:
            raise _refused(self.provider, "the URL carries credentials")
        if not self.hosts.allows(host):
            raise _refused(self.provider, f"host '{host}' is not in download_hosts")
        explicit = self.hosts.explicit(host)
        if url.scheme == "http" and not explicit:
            raise _refused(self.provider, f"plain http to '{host}' (list the host exactly)")
        if _non_public(host) and not explicit:
            raise _refused(self.provider, f"'{host}' is not a public address")

    async def _get_once(self, url: httpx.URL) -> tuple[bytes | None, httpx.URL | None]:
        """(body, None), or (None, the redirect target)."""
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise _refused(self.provider, "a redirect without a Location")
                    return None, url.join(location)
                if response.status_code != 200:
                    raise ProviderError(
                        f"The upstream provider '{self.provider}' image download failed "
                        f"(HTTP {response.status_code}).",
                        code="upstream_download_failed",
                    )
                return await self._read_capped(response), None
        except httpx.InvalidURL:
            raise _refused(self.provider, "a redirect to an invalid URL") from None
        except httpx.TimeoutException:
            raise ProviderTimeout(
                f"The upstream provider '{self.provider}' image download timed out."
            ) from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"The upstream provider '{self.provider}' image download failed: "
                f"{type(exc).__name__}."
            ) from None

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(self.provider, self.max_bytes)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise _too_large(self.provider, self.max_bytes)
        return bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()
