"""What the S3 blob store does beyond the blob contract (tests/proxy/contracts/): one object
per blob however many replicas write it, healing, and failing fast and by name when S3 is
not there. Against moto's server on loopback (tests/backends/s3.py), a bucket per test."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.stores.backend_errors import BackendUnavailable
from proxy.stores.s3_blobs import S3BlobStore, open_s3_blobs
from proxy.stores.s3_client import S3Location
from tests.fakes.images import make_png

FAIL_FAST = 5.0  # seconds: an unreachable S3 must fail a request in seconds, not minutes


def _keys(admin: Any, bucket: str, prefix: str = "") -> list[str]:
    listed = admin.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for obj in listed.get("Contents", [])]


@pytest.fixture
async def store(s3_settings: S3Location) -> Any:
    opened = await open_s3_blobs(s3_settings)
    yield opened
    await opened.aclose()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_twenty_replicas_storing_the_same_image_leave_one_object(
    store: S3BlobStore, s3_admin: Any
) -> None:
    png = make_png(64, 48)
    shas = await asyncio.gather(*(store.put(png) for _ in range(20)))
    sha = hashlib.sha256(png).hexdigest()
    assert set(shas) == {sha}
    bucket = store.location.bucket
    assert _keys(s3_admin, bucket) == [f"blobs/{sha}"]  # prefix + sha256, nothing else
    head = s3_admin.head_object(Bucket=bucket, Key=f"blobs/{sha}")
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == len(png)
    assert await store.get(sha) == png


async def test_a_corrupt_object_is_deleted_reported_missing_and_can_be_stored_again(
    store: S3BlobStore, s3_admin: Any
) -> None:
    png = make_png(32, 32)
    sha = await store.put(png)
    bucket, name = store.location.bucket, store.name(sha)
    s3_admin.put_object(Bucket=bucket, Key=name, Body=png[:-1] + b"\x00")  # bit rot
    assert await store.get(sha) is None
    assert _keys(s3_admin, bucket) == []
    assert (await store.stats()).healed == 1
    assert await store.put(png) == sha  # the written-once name is free again
    assert await store.get(sha) == png
    assert (await store.stats()).healed == 1


async def test_a_two_megabyte_blob_round_trips_as_bytes(store: S3BlobStore, s3_admin: Any) -> None:
    data = random.Random(7).randbytes(2 * 1024 * 1024)
    sha = await store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert await store.get(sha) == data
    head = s3_admin.head_object(Bucket=store.location.bucket, Key=store.name(sha))
    assert head["ContentType"] == "application/octet-stream"  # not an image format we know
    stats = await store.stats()
    assert (stats.items, stats.bytes) == (1, len(data))


async def test_stats_count_only_blob_names_under_the_prefix(
    store: S3BlobStore, s3_admin: Any
) -> None:
    await store.put(b"one")
    await store.put(b"two!")
    bucket = store.location.bucket
    s3_admin.put_object(Bucket=bucket, Key="blobs/README", Body=b"not a blob")
    s3_admin.put_object(Bucket=bucket, Key="elsewhere/" + "0" * 64, Body=b"another prefix")
    stats = await store.stats()
    assert (stats.items, stats.bytes, stats.evictions) == (2, 7, 0)


async def test_an_address_that_is_not_a_sha256_is_missing(store: S3BlobStore) -> None:
    await store.put(b"x")
    assert await store.get("../" + hashlib.sha256(b"x").hexdigest()) is None
    assert await store.get(hashlib.sha256(b"x").hexdigest().upper()) is None


async def test_a_missing_bucket_at_start_is_named(s3_settings: S3Location) -> None:
    bucket = f"imagegate-missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(BackendUnavailable) as raised:
        await open_s3_blobs(dataclasses.replace(s3_settings, bucket=bucket))
    assert raised.value.backend == "s3"
    assert f"bucket '{bucket}' does not exist" in raised.value.detail
    assert bucket in str(raised.value)


async def test_a_bucket_deleted_while_running_is_unavailable_not_a_miss(
    s3_settings: S3Location, s3_admin: Any
) -> None:
    bucket = f"imagegate-gone-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=bucket)
    store = await open_s3_blobs(dataclasses.replace(s3_settings, bucket=bucket))
    s3_admin.delete_bucket(Bucket=bucket)
    try:
        with pytest.raises(BackendUnavailable, match=bucket):
            await store.get(hashlib.sha256(b"anything").hexdigest())
        with pytest.raises(BackendUnavailable, match=bucket):
            await store.put(b"anything")
    finally:
        await store.aclose()


async def test_a_dead_endpoint_fails_within_seconds(closed_port: int) -> None:
    settings = S3Location(
        bucket="imagegate",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        access_key_id="k",
        secret_access_key="s",
    )
    async with asyncio.timeout(FAIL_FAST):
        with pytest.raises(BackendUnavailable) as raised:
            await open_s3_blobs(settings)
    assert raised.value.backend == "s3"
    assert f"127.0.0.1:{closed_port} did not answer" in raised.value.detail


async def test_an_endpoint_that_never_answers_times_out(silent_port: int) -> None:
    settings = S3Location(
        bucket="imagegate",
        endpoint_url=f"http://127.0.0.1:{silent_port}",
        access_key_id="k",
        secret_access_key="s",
    )
    async with asyncio.timeout(FAIL_FAST):
        with pytest.raises(BackendUnavailable, match="did not answer"):
            await open_s3_blobs(settings, reply_timeout=0.5)


async def test_no_credentials_anywhere_is_named(
    s3_settings: S3Location, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = dataclasses.replace(s3_settings, access_key_id="", secret_access_key="")
    with pytest.raises(BackendUnavailable, match=r"no usable credentials.*access_key_id"):
        await open_s3_blobs(settings)


async def test_a_name_is_written_once(store: S3BlobStore, s3_admin: Any) -> None:
    """A second put of a taken name does not upload over it (the conditional put's 412 is
    success): the object there is the one a later `get` verifies, and heals if bad."""
    png = make_png(16, 16)
    sha = await store.put(png)
    bucket, name = store.location.bucket, store.name(sha)
    s3_admin.put_object(Bucket=bucket, Key=name, Body=b"what another writer left")
    assert await store.put(png) == sha
    assert (
        s3_admin.get_object(Bucket=bucket, Key=name)["Body"].read() == b"what another writer left"
    )
    assert await store.get(sha) is None
    assert await store.put(png) == sha
    assert await store.get(sha) == png


async def test_healing_spares_a_good_copy_written_after_the_bad_read(
    store: S3BlobStore, s3_admin: Any
) -> None:
    """The race a test cannot interleave through `get`: replica A reads a corrupt object,
    B heals it and C stores a good copy before A's delete lands. A deletes only the object
    it read (If-Match its ETag), so C's copy stays."""
    png = make_png(8, 8)
    sha = await store.put(png)
    etag_of_the_bad_read = '"' + hashlib.md5(b"corrupt", usedforsecurity=False).hexdigest() + '"'
    await store._heal(sha, etag_of_the_bad_read)
    assert await store.get(sha) == png
    assert (await store.stats()).healed == 0
