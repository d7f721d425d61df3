"""The bench's images: real, deterministic PNGs of a chosen byte size, made with Pillow.

A flat 1024x1024 picture compresses to almost nothing, so each image is a flat background
with one square of seeded noise; the square's side is searched so the encoded file lands
near the target size. Same Pillow build, same arguments -> the same bytes.
"""

from __future__ import annotations

import io
import random
from functools import lru_cache

from PIL import Image

__all__ = ["IMAGE_SIDE", "SIZES", "make_png"]

IMAGE_SIDE = 1024
# name -> target size in bytes
SIZES: dict[str, int] = {"small": 10 * 1024, "large": 1536 * 1024}


def _encode(side: int, patch: int, seed: int) -> bytes:
    img = Image.new("RGB", (side, side), (40, 90, 160))
    if patch > 0:
        noise = random.Random(seed).randbytes(patch * patch * 3)  # noqa: S311 - test data
        img.paste(Image.frombytes("RGB", (patch, patch), noise), (0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


@lru_cache(maxsize=8)
def make_png(target_bytes: int, side: int = IMAGE_SIDE, seed: int = 7) -> bytes:
    """A `side`x`side` PNG whose size is close to (never far above) `target_bytes`."""
    lo, hi = 0, side
    best = _encode(side, 0, seed)
    while lo <= hi:
        mid = (lo + hi) // 2
        data = _encode(side, mid, seed)
        if len(data) <= target_bytes:
            best, lo = data, mid + 1
        else:
            hi = mid - 1
    return best
