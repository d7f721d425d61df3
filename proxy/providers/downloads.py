"""Fetch a provider's output files without trusting the provider: `data:` URIs, or http(s)
URLs on an allow-list of hosts, with a size cap and redirects checked hop by hop.

Rules for a URL (the first one and every redirect target):
- its scheme, host and port must match the allow-list (`proxy.providers.allowlist`): an exact
  name (`replicate.delivery`, `127.0.0.1:9000`) or a leading wildcard (`*.replicate.delivery`,
  which matches sub-domains only); an entry without a port matches the default port only;
- `https` always; plain `http` only for a host listed exactly (an operator's explicit choice);
- no user-info (`user:pass@host`), and no private, loopback, link-local or otherwise
  non-public address, whether the URL names it or a host name resolves to it, unless that
  exact address is listed; the connection goes to the address that was checked (one lookup,
  `proxy.providers.pinning`);
- at most `max_redirects` redirects, each re-checked; the body is streamed and abandoned as
  soon as it passes `max_bytes`, whether or not a Content-Length was sent.
The downloads never carry a provider's credentials: this is a separate client with no auth,
and no proxy from the environment.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import unquote_to_bytes

import httpx

from policies.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from proxy.providers.allowlist import HostAllowList, is_non_public
from proxy.providers.pinning import PinnedTransport, Resolver, SystemResolver

__all__ = [
    "DEFAULT_MAX_REDIRECTS",
    "Downloader",
    "HostAllowList",
    "Resolver",
    "SystemResolver",
    "decode_data_uri",
]

DEFAULT_MAX_REDIRECTS: Final = 3
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_HEADERS: Final = {"User-Agent": "imagegate", "Accept": "image/*"}


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
    """One httpx client for one provider's output files (redirects followed by hand).

    `resolver`: host name -> addresses (default: the system's); the connection is pinned to
    the addresses it returned that pass the rules, and TLS verifies the certificate against
    the host name (`ssl_context`: the CAs to trust; default: the system's). `transport`
    replaces the pinned transport (a test routing public host names to a loopback fake); it
    then decides where to connect.
    """

    def __init__(
        self,
        provider: str,
        hosts: Iterable[str],
        *,
        max_bytes: int,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.provider = provider
        self.hosts = HostAllowList(hosts)
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.timeout = timeout
        pinned = transport or PinnedTransport(
            resolver or SystemResolver(), self.hosts.lists_address, self._private, ssl_context
        )
        self._client = httpx.AsyncClient(
            transport=pinned,
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers=_HEADERS,
        )

    async def fetch(self, url: str) -> bytes:
        """The file at `url` (a `data:` URI or an allowed http(s) URL), whole within
        `timeout` seconds (redirects included: a slow drip cannot hold a call open)."""
        if url[:5].lower() == "data:":
            return decode_data_uri(url, max_bytes=self.max_bytes, provider=self.provider)
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise _refused(self.provider, "not a valid URL") from None
        try:
            async with asyncio.timeout(self.timeout):
                return await self._follow(target)
        except TimeoutError:
            raise ProviderTimeout(
                f"The upstream provider '{self.provider}' image download took longer than "
                f"{self.timeout:g} s."
            ) from None

    async def _follow(self, target: httpx.URL) -> bytes:
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
        entry = self.hosts.match(url.scheme, host, url.port)
        if entry is None:
            if url.scheme == "http" and self.hosts.allows(host, "https", url.port):
                raise _refused(self.provider, f"plain http to '{host}' (list the host exactly)")
            where = host if url.port is None else f"{host}:{url.port}"
            raise _refused(self.provider, f"'{url.scheme}://{where}' is not in download_hosts")
        if is_non_public(host) and not self.hosts.lists_address(host):
            raise _refused(self.provider, f"'{host}' is not a public address")

    def _private(self, host: str) -> ProviderError:
        return _refused(self.provider, f"'{host}' resolves only to non-public addresses")

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
