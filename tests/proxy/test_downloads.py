"""`proxy.providers.downloads`: the rules every adapter's file downloads follow, against a
loopback file server (a fake's `/files/`), with a resolver that maps test host names."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aiohttp import web

from policies.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from proxy.config import ConfigError, load_settings
from proxy.providers.downloads import Downloader, decode_data_uri
from tests.fakes import images
from tests.fakes.openai_server import FakeOpenAI

PNG = images.make_png(8, 8)


class MappedResolver:
    """Test host names -> fixed addresses (aiohttp's FakeResolver idea); records lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"unknown host {host}")
        return self.table[host]


@pytest.fixture
async def files() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        fake.store_file("a.png", PNG)
        yield fake


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    made: list[Downloader] = []

    def build(hosts: tuple[str, ...], **kw: Any) -> Downloader:
        kw.setdefault("max_bytes", 1024 * 1024)
        kw.setdefault("timeout", 2.0)
        downloader = Downloader("test", hosts, **kw)
        made.append(downloader)
        return downloader

    yield build
    for downloader in made:
        await downloader.aclose()


async def refused(downloader: Downloader, url: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await downloader.fetch(url)
    return caught.value


# -- origins: scheme, host and port ---------------------------------------------------------
async def test_the_port_is_part_of_the_allow_list(files: FakeOpenAI, make: Any) -> None:
    async with FakeOpenAI() as other:  # another service on the same host
        other.store_file("a.png", PNG)
        downloader = make((f"127.0.0.1:{files.port}",))
        assert await downloader.fetch(f"{files.origin}/files/a.png") == PNG
        err = await refused(downloader, f"{other.origin}/files/a.png")
        assert err.code == "upstream_download_refused" and str(other.port) in err.message
        assert other.requests == []


async def test_an_entry_without_a_port_means_the_default_port(make: Any) -> None:
    downloader = make(("files.example", "http://plain.example", "https://tls.example:8443"))
    downloader.check(httpx.URL("https://files.example/a.png"))
    downloader.check(httpx.URL("https://files.example:443/a.png"))
    downloader.check(httpx.URL("http://plain.example/a.png"))
    downloader.check(httpx.URL("https://tls.example:8443/a.png"))
    for url in (
        "https://files.example:8443/a.png",
        "http://plain.example:8080/a.png",
        "https://plain.example/a.png",  # the entry names http only
        "http://tls.example:8443/a.png",
    ):
        with pytest.raises(ProviderError, match="will not fetch"):
            downloader.check(httpx.URL(url))


@pytest.mark.parametrize("entry", ["ftp://x.example", "x.example:0", "x.example:http"])
async def test_malformed_entries_are_named(entry: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="download_hosts entry"):
        Downloader("test", (entry,), max_bytes=1, timeout=1)
    config = tmp_path / "config.toml"
    config.write_text(f'[providers.replicate]\ndownload_hosts = ["{entry}"]\n')
    with pytest.raises(ConfigError) as caught:  # refused at start, with its path
        load_settings(config, environ={})
    assert caught.value.path == "providers.replicate.download_hosts"


# -- names that resolve to non-public addresses ---------------------------------------------
async def test_a_listed_name_that_resolves_to_loopback_is_refused(
    files: FakeOpenAI, make: Any
) -> None:
    """`localhost` on the list (the old rule: a listed name was fetched wherever it pointed)."""
    downloader = make(("localhost", f"localhost:{files.port}"))
    err = await refused(downloader, f"http://localhost:{files.port}/files/a.png")
    assert err.code == "upstream_download_refused" and "non-public" in err.message
    assert files.requests == []


async def test_the_checked_address_is_the_one_connected(files: FakeOpenAI, make: Any) -> None:
    resolver = MappedResolver({"files.test": ["127.0.0.1"]})
    url = f"http://files.test:{files.port}/files/a.png"
    closed = make((f"files.test:{files.port}",), resolver=resolver)
    assert "non-public" in (await refused(closed, url)).message
    # The operator lists the loopback address itself: the opt-in for a private file host.
    opted_in = make((f"files.test:{files.port}", "127.0.0.1"), resolver=resolver)
    assert await opted_in.fetch(url) == PNG
    assert resolver.lookups == ["files.test", "files.test"]  # one lookup per connection
    assert files.last.headers["Host"] == f"files.test:{files.port}"  # the name, not the IP


async def test_only_checked_addresses_are_tried(files: FakeOpenAI, make: Any) -> None:
    """A private address the operator did not list is dropped; a listed one is used."""
    resolver = MappedResolver({"files.test": ["10.0.0.7", "127.0.0.1"]})
    downloader = make((f"files.test:{files.port}", "127.0.0.1"), resolver=resolver)
    assert await downloader.fetch(f"http://files.test:{files.port}/files/a.png") == PNG


async def test_a_name_that_does_not_resolve_is_unavailable(make: Any) -> None:
    downloader = make(("files.test",), resolver=MappedResolver({}))
    err = await refused(downloader, "https://files.test/a.png")
    assert isinstance(err, ProviderUnavailable) and err.retryable


NON_PUBLIC = [
    "10.1.2.3",
    "172.16.0.9",
    "192.168.1.1",
    "127.0.0.1",
    "169.254.169.254",
    "100.64.0.1",  # shared address space (CGNAT)
    "0.0.0.0",  # noqa: S104
    "224.0.0.1",  # multicast
    "::1",
    "fe80::1",
    "fc00::1",
    "::ffff:10.0.0.1",
    # IPv4-mapped forms of ranges only the mapped IPv4 address shows as non-public
    "::ffff:100.64.0.1",
    "::ffff:224.0.0.1",
]


@pytest.mark.parametrize("address", NON_PUBLIC)
async def test_every_non_public_range_is_refused_for_a_listed_name(address: str, make: Any) -> None:
    """The name IS on the list (by wildcard): only the non-public rule can refuse it."""
    resolver = MappedResolver({"cdn.files.test": [address]})
    downloader = make(("*.files.test",), resolver=resolver)
    err = await refused(downloader, "https://cdn.files.test/a.png")
    assert err.code == "upstream_download_refused"
    assert "'cdn.files.test' resolves only to non-public addresses" in err.message
    assert resolver.lookups == ["cdn.files.test"]


# -- bodies --------------------------------------------------------------------------------
async def test_a_chunked_body_past_the_cap_is_cut_off(files: FakeOpenAI, make: Any) -> None:
    """No Content-Length to refuse up front: the streamed count must stop it."""
    files.spoil_next("oversize", size=256 * 1024, path="/files/")
    downloader = make((f"127.0.0.1:{files.port}",), max_bytes=16 * 1024)
    err = await refused(downloader, f"{files.origin}/files/a.png")
    assert err.code == "upstream_image_too_large"


async def test_a_declared_length_past_the_cap_is_refused(files: FakeOpenAI, make: Any) -> None:
    files.store_file("big.png", bytes(64 * 1024))
    downloader = make((f"127.0.0.1:{files.port}",), max_bytes=16 * 1024)
    err = await refused(downloader, f"{files.origin}/files/big.png")
    assert err.code == "upstream_image_too_large"


async def test_a_declared_length_one_past_the_cap_is_refused_before_the_body(
    files: FakeOpenAI, make: Any
) -> None:
    """Content-Length says max_bytes + 1, then the body stalls: the declared length alone
    must refuse it (a timeout would mean the gateway started reading the body)."""
    files.store_file("big.png", bytes(16 * 1024 + 1))
    files.spoil_next("stall", seconds=5, path="/files/")
    downloader = make((f"127.0.0.1:{files.port}",), max_bytes=16 * 1024, timeout=2.0)
    err = await refused(downloader, f"{files.origin}/files/big.png")
    assert err.code == "upstream_image_too_large"


async def test_a_body_of_exactly_the_cap_is_fetched(files: FakeOpenAI, make: Any) -> None:
    data = PNG + bytes(16 * 1024 - len(PNG))
    files.store_file("exact.png", data)
    for spoil in (False, True):  # declared length, then chunked (no Content-Length)
        if spoil:
            files.spoil_next("oversize", size=len(data), path="/files/")
        downloader = make((f"127.0.0.1:{files.port}",), max_bytes=16 * 1024)
        assert await downloader.fetch(f"{files.origin}/files/exact.png") == data


async def test_a_slow_drip_ends_at_the_timeout(files: FakeOpenAI, make: Any) -> None:
    """Every read arrives within the read timeout; the whole download may not."""
    files.store_file("b.png", bytes(4096))
    files.spoil_next("drip", seconds=0.05, path="/files/")
    downloader = make((f"127.0.0.1:{files.port}",), timeout=0.3)
    err = await refused(downloader, f"{files.origin}/files/b.png")
    assert isinstance(err, ProviderTimeout)


async def test_a_stall_mid_body_times_out(files: FakeOpenAI, make: Any) -> None:
    files.spoil_next("stall", seconds=3, path="/files/")
    downloader = make((f"127.0.0.1:{files.port}",), timeout=0.3)
    assert isinstance(await refused(downloader, f"{files.origin}/files/a.png"), ProviderTimeout)


@pytest.mark.parametrize("kind", ["truncate", "reset"])
async def test_transport_errors_are_unavailable(files: FakeOpenAI, make: Any, kind: Any) -> None:
    files.spoil_next(kind, path="/files/")
    downloader = make((f"127.0.0.1:{files.port}",))
    err = await refused(downloader, f"{files.origin}/files/a.png")
    assert isinstance(err, ProviderUnavailable) and "download failed" in err.message


async def test_an_error_status_fails_the_download(files: FakeOpenAI, make: Any) -> None:
    downloader = make((f"127.0.0.1:{files.port}",))
    err = await refused(downloader, f"{files.origin}/files/missing.png")
    assert err.code == "upstream_download_failed" and "HTTP 404" in err.message


@pytest.mark.parametrize("status", [203, 206, 304])
async def test_only_a_200_is_an_image(files: FakeOpenAI, make: Any, status: int) -> None:
    """A partial (206), non-authoritative (203) or not-modified (304) answer is not the
    file: the download fails instead of storing whatever body came with it."""
    files.fail_next(status, body=PNG, content_type="image/png", path="/files/")
    downloader = make((f"127.0.0.1:{files.port}",))
    err = await refused(downloader, f"{files.origin}/files/a.png")
    assert err.code == "upstream_download_failed" and f"HTTP {status}" in err.message


# -- redirects -----------------------------------------------------------------------------
async def test_a_redirect_without_location(files: FakeOpenAI, make: Any) -> None:
    files.fail_next(302, body="", path="/files/")
    downloader = make((f"127.0.0.1:{files.port}",))
    err = await refused(downloader, f"{files.origin}/files/a.png")
    assert "without a Location" in err.message


async def test_a_redirect_to_an_unusable_url(files: FakeOpenAI, make: Any) -> None:
    files.redirect_download_to("http://x.example:notaport/a.png")
    downloader = make((f"127.0.0.1:{files.port}", "x.example"))
    err = await refused(downloader, f"{files.origin}/files/a.png")
    assert err.retryable and len(files.requests) == 1  # a provider fault; nothing followed


@pytest.mark.parametrize(
    "target", ["https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/a.png"]
)
async def test_a_redirect_to_a_private_address(files: FakeOpenAI, make: Any, target: str) -> None:
    files.redirect_download_to(target)
    downloader = make((f"127.0.0.1:{files.port}", "*.254.169.254", "*.0.0.1"))
    err = await refused(downloader, f"{files.origin}/files/a.png")
    assert "not a public address" in err.message


async def test_fetch_all_raises_the_first_failure_after_all_settle(
    files: FakeOpenAI, make: Any
) -> None:
    downloader = make((f"127.0.0.1:{files.port}",))
    ok, bad = f"{files.origin}/files/a.png", f"{files.origin}/files/missing.png"
    assert await downloader.fetch_all([ok, ok]) == (PNG, PNG)
    with pytest.raises(ProviderError, match="HTTP 404"):
        await downloader.fetch_all([ok, bad])


async def test_an_invalid_url_is_refused(make: Any) -> None:
    err = await refused(make(("x.example",)), "http://x.example:notaport/a.png")
    assert "not a valid URL" in err.message


# -- data: URIs ------------------------------------------------------------------------------
B64 = base64.b64encode(PNG).decode()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"data:image/png;base64,{B64}", PNG),
        (f"data:image/png;BASE64,{B64[:20]}\n{B64[20:]}", PNG),  # white space is dropped
        ("data:text/plain,a%20b", b"a b"),
        ("data:,", b""),
    ],
)
def test_data_uris(uri: str, expected: bytes) -> None:
    assert decode_data_uri(uri, max_bytes=1024, provider="test") == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("data:image/png;base64", "without a comma"),
        ("data:image/png;base64,!!!notbase64", "not valid base64"),
        (f"data:image/png;base64,{base64.b64encode(bytes(4096)).decode()}", "larger than"),
        ("data:text/plain," + "%41" * 2048, "larger than"),
    ],
)
def test_bad_data_uris(uri: str, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        decode_data_uri(uri, max_bytes=1024, provider="test")


async def test_a_data_uri_through_fetch(make: Any) -> None:
    assert await make(()).fetch(f"data:image/png;base64,{B64}") == PNG


# -- TLS through the pinned connection -------------------------------------------------------
@pytest.fixture
async def tls_files() -> AsyncIterator[tuple[int, trustme.CA]]:
    """An https file server on 127.0.0.1 whose certificate names `files.test` only."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("files.test").configure_cert(server_context)

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/a.png", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    yield int(runner.addresses[0][1]), ca
    await runner.cleanup()


@pytest.mark.parametrize("name", ["files.test", "other.test"])
async def test_tls_is_verified_against_the_name_not_the_pinned_address(
    tls_files: tuple[int, trustme.CA], make: Any, name: str
) -> None:
    port, ca = tls_files
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    resolver = MappedResolver({name: ["127.0.0.1"]})
    downloader = make(
        (f"{name}:{port}", "127.0.0.1"), resolver=resolver, ssl_context=client_context
    )
    url = f"https://{name}:{port}/a.png"
    if name == "files.test":
        assert await downloader.fetch(url) == PNG
    else:  # the certificate does not name it: the pinned address alone proves nothing
        err = await refused(downloader, url)
        assert isinstance(err, ProviderUnavailable) and "ConnectError" in err.message
