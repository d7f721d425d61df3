"""The three real backends of one shared-mode test, and the config that names them.

`shared` (an async fixture): a PostgreSQL database (empty: the gateway under test migrates
it at start), a Redis prefix and an S3 bucket (moto's server) of this test's own, each
cleaned up after it. `SharedBackends.toml(...)` writes the
`[storage]`, `[redis]`, `[postgres]` and `[s3]` tables of DESIGN.md §6 for them (a backend
may be moved to another port: a `TcpProxy` in front of it, or a closed one), plus whatever
else the test's config holds.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from proxy.config import Settings, load_settings
from proxy.stores.s3_client import S3Location
from tests.backends.postgres import postgres_database
from tests.backends.redis import open_redis_backend

__all__ = ["SharedBackends", "closed_port", "on_port", "shared"]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_port(url: str, port: int) -> str:
    """`url` with its host and port replaced by 127.0.0.1:`port` (user and path kept)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


@dataclass(frozen=True)
class SharedBackends:
    redis_url: str
    redis_prefix: str
    dsn: str
    s3: S3Location

    def moved(self, *, redis: int | None = None, postgres: int | None = None,
              s3: int | None = None) -> SharedBackends:  # fmt: skip
        """The same backends reached through other loopback ports."""
        moved = self
        if redis is not None:
            moved = replace(moved, redis_url=on_port(moved.redis_url, redis))
        if postgres is not None:
            moved = replace(moved, dsn=on_port(moved.dsn, postgres))
        if s3 is not None:
            endpoint = on_port(moved.s3.endpoint_url, s3)
            moved = replace(moved, s3=replace(moved.s3, endpoint_url=endpoint))
        return moved

    def toml(self, extra: str = "", *, lease_seconds: float = 40) -> str:
        s3 = self.s3
        return f"""
[storage]
backend = "shared"
lease_seconds = {lease_seconds}
[redis]
url = "{self.redis_url}"
prefix = "{self.redis_prefix}"
[postgres]
dsn = "{self.dsn}"
[s3]
endpoint_url = "{s3.endpoint_url}"
bucket = "{s3.bucket}"
prefix = "{s3.prefix}"
region = "{s3.region}"
access_key_id = "{s3.access_key_id}"
secret_access_key = "{s3.secret_access_key}"
{extra}
"""

    def settings(self, tmp_path: Path, extra: str = "", **kw: float) -> Settings:
        path = tmp_path / "shared.toml"
        path.write_text(self.toml(extra, **kw))
        return load_settings(path, {"IMAGEGATE_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
async def shared(
    request: pytest.FixtureRequest, s3_settings: S3Location
) -> AsyncIterator[SharedBackends]:
    redis = open_redis_backend(request)
    # An empty database: the gateway (three replicas at once, in the suite) migrates it.
    async with postgres_database(migrated=False) as dsn:
        yield SharedBackends(redis.url, redis.prefix, dsn, s3_settings)
