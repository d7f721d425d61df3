"""Scenario 7 (issue 16): hits that come from the stores, beside the limit.

One data dir is filled with 100,000 entries straight through the gateway's own disk adapters
(`populate_plan`: its normalization, key function, `DiskEntryStore` and `DiskBlobStore`; no
upstream call): 99,000 entries point at the 10 KB image (every tenth one with two images, for
the mixed scenario's n=2) and 1,000 at the 1.5 MB one. The gateway runs with `[cache]
memory_mb = 0`, so no hit is answered from memory: each one is a lookup in the entry store
and a blob read. wrk rotates 1,000 distinct request bodies per size; the limit returns the
gateway's exact hit bytes of one of them. The mixed scenario (8) reuses the same data dir.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from bench.assets import SIZES, make_png
from bench.gateway import populate_plan, request_body, write_config
from bench.load import lua_script
from bench.procs import free_port
from bench.scenarios import GEN, JSON, Harness, Server, _phase, http
from bench.upstream import LARGE_MARK

__all__ = ["LARGE_ENTRIES", "fill_store", "phase_store_hits", "rotation", "store_plan"]

LARGE_ENTRIES = 1_000
ROTATION = 1_000
PAIR_EVERY = 10  # every tenth small entry holds two images (n=2)


def small_prompt(i: int) -> str:
    return f"bench many {i}"


def large_prompt(j: int) -> str:
    return f"bench many large {j} {LARGE_MARK}"


def small_count(entries: int) -> int:
    return max(1, entries - min(LARGE_ENTRIES, entries // 10))


def store_plan(entries: int, small: bytes, large: bytes) -> Iterator[tuple[str, bytes, int]]:
    """(prompt, image, n) for every entry: `entries` in all, a tenth (at most 1,000) large."""
    smalls = small_count(entries)
    for i in range(smalls):
        yield small_prompt(i), small, 2 if i % PAIR_EVERY == 0 else 1
    for j in range(entries - smalls):
        yield large_prompt(j), large, 1


def rotation(entries: int, size: str, count: int = ROTATION) -> list[str]:
    """`count` request bodies spread over the entries of one size (all of them HITs)."""
    if size == "large":
        larges = entries - small_count(entries)
        return [request_body(large_prompt(j)) for j in range(min(count, larges))]
    smalls = small_count(entries)
    step = max(1, smalls // count)
    return [request_body(small_prompt(i)) for i in range(0, smalls, step)][:count]


def fill_store(h: Harness) -> Path:
    """The 100,000-entry data dir (once per bench run)."""
    data = h.dir / "data-store"
    if (data / "entries").exists():
        return data
    entries = h.cfg.entries_big
    config = write_config(
        h.dir / "populate-store.toml",
        port=free_port(),
        data_dir=data,
        upstream_base_url=h.upstream_base,
    )
    started = time.monotonic()
    plan = store_plan(entries, make_png(SIZES["small"]), make_png(SIZES["large"]))
    written = populate_plan(config, plan)
    took = time.monotonic() - started
    h.log(f"  populated {written:,} entries in {took:.1f}s (through the disk adapters)")
    h.extra.setdefault("populate_seconds", {})[f"store {written}"] = round(took, 1)
    return data


def _check_and_capture(gw: Server, bodies: list[str], size: str) -> bytes:
    hit = b""
    for body in (bodies[0], bodies[len(bodies) // 2], bodies[-1]):
        status, headers, answer = http("POST", gw.url(GEN), body.encode(), JSON)
        if status != 200 or headers.get("X-Cache") != "HIT":
            raise RuntimeError(f"store entry ({size}) was {status} {headers.get('X-Cache')}")
        hit = hit or answer
    return hit


def phase_store_hits(h: Harness) -> None:
    with _phase(h, f"scenario 7: store hits, {h.cfg.entries_big:,} entries, memory tier off"):
        data = fill_store(h)
        gw = h.start_gateway("imagegate-store", data, 1, memory_mb=0)
        limit: Server | None = None
    try:
        bodies_dir = h.dir / "store-bodies"
        bodies_dir.mkdir(exist_ok=True)
        rotations = {size: rotation(h.cfg.entries_big, size) for size in SIZES}
        for size, bodies in rotations.items():
            hit = _check_and_capture(gw, bodies, size)
            (bodies_dir / f"post-store-{size}.json").write_bytes(hit)
        limit = h.start_limit(bodies_dir, 1)
        for size, bodies in rotations.items():
            limit.posts[f"store-{size}"] = (f"/store-{size}", bodies[0])
            script = lua_script(method="POST", bodies=bodies, headers=JSON)
            case = f"store hit b64 {size}"
            for conns in h.cfg.hit_conns:
                h.measure(
                    "7",
                    case,
                    gw,
                    connections=conns,
                    script=script,
                    path=GEN,
                    entries=h.cfg.entries_big,
                    rotation=len(bodies),
                )
                h.hit_post("7", case, limit, f"store-{size}", conns)
    finally:
        h.stop(gw, limit)
