"""Where the stores live: `[storage]`, and for shared mode (many replicas as one gateway,
DESIGN.md §6) `[redis]`, `[postgres]` and `[s3]`.

```toml
[storage]
backend = "shared"                 # default "embedded": diskcache and SQLite under data_dir
lease_seconds = 40                 # shared: a silent replica's reservations settle after it
[redis]
url = "redis://127.0.0.1:6379/0"   # required when shared
prefix = "imagegate:"              # every Redis key starts with it
[postgres]
dsn = "postgresql://postgres@127.0.0.1:5432/imagegate"   # required when shared
[s3]
endpoint_url = "http://127.0.0.1:9000"   # empty: AWS itself
bucket = "imagegate"                     # required when shared
prefix = "blobs/"
region = "us-east-1"
access_key_id = "${AWS_ACCESS_KEY_ID}"   # empty: the SDK's own credential chain
secret_access_key = "${AWS_SECRET_ACCESS_KEY}"
```

The URL, DSN and keys may carry passwords, so they are `Secret`s: never in a repr or a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from policies.config_schema import ConfigError, setting
from policies.config_values import Secret

__all__ = [
    "Backend",
    "PostgresSettings",
    "RedisSettings",
    "S3Settings",
    "StorageSettings",
    "require_shared",
]

Backend = Literal["embedded", "shared"]
DEFAULT_DATA_DIR = Path(".imagegate")


def _data_dir(value: Any, path: str) -> Path:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a directory, got {value!r}")
    return Path(value) if value else DEFAULT_DATA_DIR  # "${VAR}" of an unset VAR: the default


@dataclass(frozen=True, slots=True)
class StorageSettings:
    backend: Backend = "embedded"
    data_dir: Path = setting(DEFAULT_DATA_DIR, read=_data_dir, show=str)  # embedded stores
    # Shared mode: a replica silent this long is dead; its budget reservations are settled
    # (DESIGN.md §6: within 60 s) and its single-flight leases lapse (at most 15 s).
    lease_seconds: float = setting(40.0, hint="seconds", low=1.0, high=55.0)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: Secret = setting(Secret(""), hint="a redis:// URL")
    prefix: str = setting("imagegate:", hint="a key prefix")


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    dsn: Secret = setting(Secret(""), hint="a postgresql:// DSN")


@dataclass(frozen=True, slots=True)
class S3Settings:
    endpoint_url: str = setting("", hint="a URL, or empty for AWS itself")
    bucket: str = setting("", hint="a bucket name")
    prefix: str = setting("blobs/", hint="a key prefix")
    region: str = setting("us-east-1", hint="a region name")
    access_key_id: Secret = setting(Secret(""), hint="an access key id")
    secret_access_key: Secret = setting(Secret(""), hint="a secret access key")


_REQUIRED = (
    ("redis.url", "the Redis every replica shares, e.g. redis://127.0.0.1:6379/0"),
    ("postgres.dsn", "the ledger's database, e.g. postgresql://postgres@127.0.0.1:5432/imagegate"),
    ("s3.bucket", "the bucket that holds the images"),
)


def require_shared(
    storage: StorageSettings, redis: RedisSettings, postgres: PostgresSettings, s3: S3Settings
) -> None:
    """Shared mode needs all three stores named; embedded mode ignores the sections."""
    if storage.backend != "shared":
        return
    given = {
        "redis.url": bool(redis.url),
        "postgres.dsn": bool(postgres.dsn),
        "s3.bucket": bool(s3.bucket),
    }
    for path, what in _REQUIRED:
        if not given[path]:
            raise ConfigError(path, f'is required when storage.backend = "shared": {what}')
