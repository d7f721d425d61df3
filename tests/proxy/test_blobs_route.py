"""`GET /images/<sha256>.<ext>` for blobs past the streaming threshold (read from their file
in chunks by a thread): the bytes, the validators, the format check and a corrupted file."""

from __future__ import annotations

import hashlib
import os

import aiohttp

from proxy.app_keys import BLOB_MEMORY
from tests.fakes import images

# A real PNG header (the route sniffs the first bytes) followed by 5 MiB of padding: over the
# 4 MiB above which the route streams instead of answering from memory.
LARGE = images.make_png(8, 8) + os.urandom(5 * 1024 * 1024)


async def get(gateway, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(gateway.root + path, headers=headers) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


async def test_a_large_blob_is_streamed_whole(gateway) -> None:
    sha = gateway.blobs.put(LARGE)
    status, headers, body = await get(gateway, f"/images/{sha}.png")
    assert status == 200 and body == LARGE
    assert headers["content-length"] == str(len(LARGE))
    assert headers["content-type"] == "image/png" and headers["etag"] == f'"{sha}"'
    assert "immutable" in headers["cache-control"]
    assert headers["x-request-id"].startswith("req_")  # sent before the middleware sees it


async def test_a_large_blob_answers_304_to_its_etag(gateway) -> None:
    sha = gateway.blobs.put(LARGE)
    status, _, body = await get(gateway, f"/images/{sha}.png", **{"If-None-Match": f'"{sha}"'})
    assert status == 304 and body == b""


async def test_a_large_blob_in_another_format_is_not_found(gateway) -> None:
    sha = gateway.blobs.put(LARGE)
    status, _, body = await get(gateway, f"/images/{sha}.jpg")
    assert status == 404 and b"format" in body


async def test_a_corrupted_large_blob_is_not_streamed(gateway) -> None:
    sha = gateway.blobs.put(LARGE)
    blob_file = gateway.blobs.open(sha)
    assert blob_file is not None
    before = blob_file.path.stat()
    with blob_file.path.open("r+b") as handle:  # same size, same inode
        handle.seek(1024 * 1024)
        handle.write(b"\x00" * 64)
    after = blob_file.path.stat()
    if after.st_mtime_ns == before.st_mtime_ns:  # a coarse clock: move it as a fine one would
        os.utime(blob_file.path, ns=(after.st_atime_ns, after.st_mtime_ns + 1_000_000))
    status, _, body = await get(gateway, f"/images/{sha}.png")
    assert status == 404 and hashlib.sha256(body).hexdigest() != sha


async def test_an_etag_for_an_image_that_is_not_there_is_not_a_304(gateway) -> None:
    """A 304 says "your copy is current": never for an address the gateway does not hold."""
    sha = hashlib.sha256(b"never stored").hexdigest()
    status, _, _ = await get(gateway, f"/images/{sha}.png", **{"If-None-Match": f'"{sha}"'})
    assert status == 404
    small = images.make_png(8, 8)
    held = gateway.blobs.put(small)
    status, _, body = await get(gateway, f"/images/{held}.png", **{"If-None-Match": f'"{held}"'})
    assert status == 304 and body == b""
    status, _, body = await get(gateway, f"/images/{held}.png", **{"If-None-Match": f'W/"{held}"'})
    assert status == 304
    status, _, body = await get(gateway, f"/images/{held}.png", **{"If-None-Match": '"other"'})
    assert status == 200 and body == small


async def test_a_small_blob_in_another_format_is_not_found_from_disk_or_memory(gateway) -> None:
    """A PNG's address under .jpg is a 404 whether it is read from the store or from the
    bytes kept in memory after a first serve."""
    small = images.make_png(8, 8)
    sha = gateway.blobs.put(small)
    assert (await get(gateway, f"/images/{sha}.jpg"))[0] == 404  # from the store
    status, headers, body = await get(gateway, f"/images/{sha}.png")  # now kept in memory
    assert (status, headers["content-type"], body) == (200, "image/png", small)
    status, _, body = await get(gateway, f"/images/{sha}.jpg")  # from memory
    assert status == 404 and b"format" in body


async def test_only_small_verified_blobs_are_kept_in_memory(gateway) -> None:
    """Past the streaming threshold a blob is streamed from its file, not copied into the
    process's memory; a small one is kept (verified) and served from there next time."""
    memory = gateway.app[BLOB_MEMORY]
    large = gateway.blobs.put(LARGE)
    status, _, body = await get(gateway, f"/images/{large}.png")
    assert status == 200 and body == LARGE and large not in memory
    small = images.make_png(8, 8)
    sha = gateway.blobs.put(small)
    assert (await get(gateway, f"/images/{sha}.png"))[2] == small
    assert memory.get(sha) == small
