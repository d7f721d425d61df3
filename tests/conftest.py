"""Shared fixtures: settings in a temp dir, a counting provider, a real gateway server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from policies.errors import ProviderError
from proxy.app import create_app
from proxy.app_keys import LEDGER_METRICS, METRICS, SETTINGS, STORES
from proxy.config import ServerSettings, Settings
from proxy.ports import ProviderCall, ProviderResult
from proxy.providers.placeholder import PlaceholderProvider
from proxy.stores.async_stores import InlineEntryStore, ThreadedBlobStore
from proxy.stores.ledger import SqliteLedger

# Backends started for the tests that ask for them (S3: moto's server, once per session).
pytest_plugins = ("tests.backends.s3",)


class ManualClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class CountingProvider:
    """The placeholder's real images, plus a call counter, a gate and scripted failures."""

    name: str = "placeholder"
    calls: list[ProviderCall] = field(default_factory=list)
    gate: asyncio.Event | None = None
    fail_next: list[Exception] = field(default_factory=list)
    inner: PlaceholderProvider = field(default_factory=PlaceholderProvider)

    def has_credentials(self) -> bool:
        return True

    async def generate(self, call: ProviderCall) -> ProviderResult:
        self.calls.append(call)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            raise self.fail_next.pop(0)
        return await self.inner.generate(call)

    async def aclose(self) -> None:
        return None


@dataclass
class PricedProvider(CountingProvider):
    """Like CountingProvider, but billed by the catalog's formula (cost left to the gateway)."""

    name: str = "replicate"

    async def generate(self, call: ProviderCall) -> ProviderResult:
        result = await super().generate(call)
        return replace(result, cost_micros=None)


@dataclass
class Gateway:
    server: TestServer
    provider: CountingProvider
    clock: ManualClock
    clients: list = field(default_factory=list)

    @property
    def root(self) -> str:
        return str(self.server.make_url("/")).rstrip("/")

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    @property
    def app(self):
        return self.server.app

    def client(self, **kw) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key="sk-test", max_retries=0, **kw)
        self.clients.append(client)
        return client

    def sync_client(self, **kw) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.base_url, api_key="sk-test", max_retries=0, **kw)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            if isinstance(client, openai.AsyncOpenAI):
                await client.close()
            else:
                client.close()
        await self.server.close()

    async def metric(self, name: str, **labels: str) -> float:
        """As a scrape reads it: the ledger and store figures are read first (/metrics)."""
        await self.app[LEDGER_METRICS].refresh()
        value = self.app[METRICS].registry.get_sample_value(name, labels)
        return value or 0.0

    @property
    def blobs(self):
        """The disk store behind the BlobStore port (tests put and damage files directly)."""
        port = self.app[STORES].blobs
        assert isinstance(port, ThreadedBlobStore)
        return port.sync

    @property
    def entries(self):
        port = self.app[STORES].entries
        assert isinstance(port, InlineEntryStore)
        return port.sync


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(server=ServerSettings(port=0), data_dir=tmp_path / "data")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def provider() -> CountingProvider:
    return CountingProvider()


def ledger_of(app: web.Application) -> SqliteLedger:
    """The app's ledger file, opened beside its own adapter, as another process would:
    tests read its rows and plant reservations there (the app holds only the ports)."""
    return SqliteLedger(app[SETTINGS].data_dir / "ledger.sqlite3")


async def start_gateway(
    settings: Settings, provider: CountingProvider, clock, *, serves_as: str = "placeholder", **kw
) -> Gateway:
    """A real server. `serves_as` names the provider slot the fake fills: "placeholder"
    answers everything for $0; "replicate" or "openai" makes the router price and route."""
    app = create_app(settings, providers={serves_as: provider}, clock=clock, **kw)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return Gateway(server, provider, clock)


@pytest.fixture
async def gateway(settings, provider, clock) -> AsyncIterator[Gateway]:
    gw = await start_gateway(settings, provider, clock)
    yield gw
    await gw.close()


__all__ = [
    "CountingProvider",
    "Gateway",
    "ManualClock",
    "PricedProvider",
    "ProviderError",
    "ledger_of",
    "replace",
    "start_gateway",
]
