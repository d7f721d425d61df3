"""A real S3 endpoint for the tests: moto's server mode in its own process, and a bucket per
test.

moto runs as `python -m moto.server` on a free loopback port rather than as a thread here:
importing moto installs a (disabled) stub into every botocore client of the importing
process, and the adapter under test must talk to a server over HTTP and nothing else.
Buckets are made and emptied with boto3 (moto's own dependency), never with the adapter.

Registered for every test by `pytest_plugins` in tests/conftest.py; a test asks for
`s3_settings` (and `s3_admin` to reach behind the adapter). Nothing starts until one does.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from proxy.stores.s3_client import S3Location

__all__ = ["ACCESS_KEY", "SECRET_KEY", "moto_s3", "s3_admin", "s3_settings"]

ACCESS_KEY = "imagegate-test"
SECRET_KEY = "imagegate-test-secret"
_READY_WITHIN = 60.0  # seconds for moto to import and listen on a loaded machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our loopback
            return bool(response.status == 200)
    except OSError:
        return False


def _start(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + _READY_WITHIN
    while process.poll() is None and time.monotonic() < deadline:
        if _answers(url):
            return process, url
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"moto did not start on {url}; its log: {log}")


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server, one per test session (per xdist worker)."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    try:
        process, url = _start(log)
    except RuntimeError:  # the port was taken between choosing and binding it: once more
        process, url = _start(log)
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_admin(moto_s3: str) -> Any:
    """A plain boto3 client on the moto server, for what the tests do behind the adapter."""
    import boto3  # only when a test asks for S3: the rest of the suite does without it

    return boto3.client(
        "s3",
        endpoint_url=moto_s3,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def s3_settings(moto_s3: str, s3_admin: Any) -> Iterator[S3Location]:
    """`[s3]` settings on a bucket of this test's own, emptied and deleted after it."""
    from proxy.stores.s3_client import S3Location

    bucket = f"imagegate-test-{uuid.uuid4().hex[:16]}"
    s3_admin.create_bucket(Bucket=bucket)
    yield S3Location(
        bucket=bucket,
        endpoint_url=moto_s3,
        prefix="blobs/",
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    for page in s3_admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3_admin.delete_object(Bucket=bucket, Key=obj["Key"])
    s3_admin.delete_bucket(Bucket=bucket)
