"""An aiobotocore S3 client for shared mode, opened from the `[s3]` settings, and the one
place its errors are mapped.

The client fails fast: a 2 s connect timeout, a 5 s timeout on each read from the socket
(not on a whole body: a large blob on a slow link still arrives) and two attempts in all
(botocore's "standard" retry mode: one retry of a connection error, a throttle or a 5xx,
after at most a second). A dead endpoint costs a request a few seconds, never minutes, and
ends in `BackendUnavailable("s3", ...)`.

Checksums: botocore's default CRC headers on every upload are turned off
(`when_required`): several S3-compatible servers reject them, and the blob store verifies
each object's sha256 on read anyway. Path-style addressing is botocore's default for a
custom `endpoint_url` (MinIO, moto, Ceph), virtual-hosted for AWS itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from proxy.config_shared import S3Settings
from proxy.stores.backend_errors import BackendUnavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "DEFAULT_TIMEOUT",
    "S3Location",
    "error_code",
    "missing_bucket",
    "open_s3_client",
    "s3_unavailable",
]

DEFAULT_TIMEOUT: Final = 5.0  # seconds to wait for one read from the socket
_CONNECT_TIMEOUT: Final = 2.0
_ATTEMPTS: Final = 2  # the first try and one retry
_POOL: Final = 64  # connections per replica; a burst of puts and gets shares them

# Answers that mean "these credentials cannot use this bucket", not "no such object".
_REFUSED: Final = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
     "InvalidToken", "403"}
)  # fmt: skip
_BUSY: Final = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where the blobs live and the keys to them: the `[s3]` table of DESIGN.md §6 with its
    secrets revealed (the config's settings keep them wrapped in `Secret`). Empty
    credentials: botocore's own chain (the `AWS_*` environment, `~/.aws`, a pod's role)."""

    bucket: str
    endpoint_url: str = ""  # empty: AWS itself
    prefix: str = "blobs/"
    region: str = "us-east-1"
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)

    @property
    def where(self) -> str:
        """The endpoint as errors name it: host and port, never credentials or a path."""
        if not self.endpoint_url:
            return f"AWS S3 ({self.region or 'default region'})"
        return urlsplit(self.endpoint_url).netloc.rpartition("@")[2] or self.endpoint_url


async def open_s3_client(
    location: S3Location, stack: AsyncExitStack, *, reply_timeout: float = DEFAULT_TIMEOUT
) -> S3Client:
    """A client for `location`'s endpoint, closed when `stack` closes. It connects on first
    use: nothing here touches the network."""
    config = AioConfig(
        connect_timeout=min(_CONNECT_TIMEOUT, reply_timeout),
        read_timeout=reply_timeout,
        retries={"mode": "standard", "total_max_attempts": _ATTEMPTS},
        max_pool_connections=_POOL,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    creator = get_session().create_client(
        "s3",
        endpoint_url=location.endpoint_url or None,
        region_name=location.region or None,
        aws_access_key_id=location.access_key_id or None,
        aws_secret_access_key=location.secret_access_key or None,
        config=config,
    )
    return await stack.enter_async_context(creator)


def error_code(exc: ClientError) -> str:
    """S3's error code (`NoSuchKey`, `PreconditionFailed`; a HEAD has only the status)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


@contextmanager
def s3_unavailable(location: S3Location) -> Iterator[None]:
    """Map what means "S3 cannot serve us" to `BackendUnavailable("s3", ...)`: no answer,
    no usable credentials, a refused key, a missing bucket, a 5xx or throttle that outlived
    the retry. Any other error (a bug of ours) propagates as it is."""
    where, bucket = location.where, location.bucket
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        detail = (
            f"no usable credentials for {where} ({exc}); set [s3] access_key_id and "
            "secret_access_key, or the AWS_* environment"
        )
        raise BackendUnavailable("s3", detail) from exc
    except (BotoConnectionError, HTTPClientError, aiohttp.ClientError, TimeoutError) as exc:
        detail = f"S3 at {where} did not answer ({type(exc).__name__}: {exc}); is it running?"
        raise BackendUnavailable("s3", detail) from exc
    except ClientError as exc:
        code, status = error_code(exc), _status(exc)
        if code == "NoSuchBucket":
            raise BackendUnavailable("s3", missing_bucket(location)) from exc
        if code in _REFUSED:
            detail = (
                f"S3 at {where} refused access to bucket '{bucket}' ({code}); check [s3] "
                "access_key_id and secret_access_key, and the key's permissions on the bucket"
            )
            raise BackendUnavailable("s3", detail) from exc
        if status >= 500 or code in _BUSY:
            detail = f"S3 at {where} failed ({status} {code}) on bucket '{bucket}'"
            raise BackendUnavailable("s3", detail) from exc
        raise


def missing_bucket(location: S3Location) -> str:
    """The one-line complaint about a bucket that is not there (at start or later)."""
    return (
        f"bucket '{location.bucket}' does not exist at {location.where}; create it (imagegate "
        "checks it at start and never creates it), or set [s3] bucket to one that exists"
    )


def s3_location(s3: S3Settings) -> S3Location:
    """The `[s3]` section as the adapter opens it (its secrets revealed here only)."""
    return S3Location(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint_url,
        prefix=s3.prefix,
        region=s3.region,
        access_key_id=s3.access_key_id.reveal(),
        secret_access_key=s3.secret_access_key.reveal(),
    )
