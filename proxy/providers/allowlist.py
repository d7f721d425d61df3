"""The download allow-list: which origins (scheme, host and port) a provider's files may come
from, and which non-public addresses the operator opted into.

An entry is `host`, `host:port`, `[v6-address]:port`, `*.suffix` (sub-domains only) or any of
those behind a scheme (`http://127.0.0.1:9000`). Without a port an entry matches only the
scheme's default port (443, 80); without a scheme it matches https, and plain http only when
the host is listed exactly (not by a wildcard). A non-public address (private, loopback,
link-local, ...) is fetched only when that exact address is listed as an entry's host: the
operator's explicit opt-in, whether the URL names the address or a host name resolves to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["HostAllowList", "is_ip", "is_non_public", "norm_host"]

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def norm_host(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def is_non_public(host: str) -> bool:
    """True for an IP literal that is not a public unicast address; False for a name."""
    try:
        ip = ipaddress.ip_address(norm_host(host))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


@dataclass(frozen=True, slots=True)
class _Entry:
    scheme: str | None
    host: str  # the exact host, or ".suffix" for a wildcard
    port: int | None
    wildcard: bool

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if self.scheme is not None and scheme != self.scheme:
            return False
        if self.scheme is None and scheme == "http" and self.wildcard:
            return False
        if port != (self.port if self.port is not None else DEFAULT_PORTS.get(scheme)):
            return False
        return host.endswith(self.host) if self.wildcard else host == self.host


def _parse(pattern: str) -> _Entry:
    text = pattern.strip()
    scheme: str | None = None
    if "://" in text:
        raw_scheme, _, text = text.partition("://")
        scheme = raw_scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"download_hosts entry {pattern!r}: the scheme must be http(s)")
    text = text.split("/", 1)[0]
    port_text = ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"download_hosts entry {pattern!r}: the port must be 1-65535")
    host = norm_host(host)
    wildcard = host.startswith("*.")
    return _Entry(scheme, host[1:] if wildcard else host, int(port_text or 0) or None, wildcard)


class HostAllowList:
    """Origins a downloader may fetch from, case-insensitive (see the module's docstring)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.entries: tuple[_Entry, ...] = tuple(_parse(p) for p in patterns if p.strip())
        self._addresses = frozenset(
            e.host for e in self.entries if not e.wildcard and is_ip(e.host)
        )

    def match(self, scheme: str, host: str, port: int | None) -> _Entry | None:
        """The first entry that allows `scheme://host:port` (port None: the default)."""
        effective = port if port is not None else DEFAULT_PORTS.get(scheme, 0)
        host = norm_host(host)
        return next((e for e in self.entries if e.matches(scheme, host, effective)), None)

    def allows(self, host: str, scheme: str = "https", port: int | None = None) -> bool:
        return self.match(scheme, host, port) is not None

    def lists_address(self, address: str) -> bool:
        """Whether the operator listed this exact IP address (the opt-in for a non-public
        one, by name or by address)."""
        return _canonical(address) in {_canonical(a) for a in self._addresses}


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(norm_host(address)))
    except ValueError:
        return norm_host(address)
