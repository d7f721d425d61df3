"""Scenario 8 (issue 16): a realistic mix, at 1 and 2 workers, beside the limit and LiteLLM.

The mix is a fixed sequence of slots, replayed by wrk in order (one thread): 80 % are hits,
drawn Zipf-distributed (s = 1.0) over the 99,000 cached 10 KB requests of the store-hit data
dir; 20 % are misses with a prompt no one asked before (a nonce per wrk run and a counter).
A third of the slots ask for `response_format: url`, the rest for `b64_json`; cached requests
with every tenth index, and every tenth miss, ask for n=2. Eight API keys of one team take
turns, each with a per-minute request and image limit and a budget far above what a run
uses: the limits are checked on every request and never hit. The memory tier is on (its
default), so popular requests are answered from memory and the tail from the stores.

The limit gets the same sequence on paths that name each slot's kind: a hit kind returns
the gateway's exact answer for that kind, a miss kind first calls the fake upstream (the
same 200 ms) and then returns the same bytes. LiteLLM gets the same bodies without API keys
(its keys need its own database); its cache holds only what priming put in it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from bisect import bisect_left
from collections.abc import Sequence

import aiohttp

from bench.gateway import MODEL, request_body
from bench.load import _DONE, _lua_str
from bench.scenarios import GEN

__all__ = [
    "KEYS",
    "METRICS_TOKEN",
    "MISS",
    "keys_config",
    "mix_lua",
    "mix_slots",
    "prime_bodies",
    "slot_kind",
]

MISS = -1
TEAM = "bench"
KEYS = tuple(f"sk-bench-mix-key-{i:04d}" for i in range(8))
METRICS_TOKEN = "bench-metrics-token-0001"  # noqa: S105 - a loopback bench's scrape token
URL_EVERY = 3  # slot j asks for url mode when j % 3 == 0
PAIR_EVERY = 10


def keys_config(*, rpm: int = 6_000_000, ipm: int = 12_000_000) -> str:
    """The keys, limits and scrape token the mixed scenario's gateway runs with."""
    lines: list[str] = []
    for i, secret in enumerate(KEYS):
        lines += [
            "[[keys]]",
            f'name = "mix-{i}"',
            f'key = "{secret}"',
            f'team = "{TEAM}"',
            "budget_usd = 1000000.0",
            'budget_window = "total"',
            f"requests_per_minute = {rpm}",
            f"images_per_minute = {ipm}",
            "",
        ]
    # One team, and the pre-filled entries are in the shared namespace: share it.
    lines += ["[cache]", "share_across_teams = true", ""]
    return "\n".join(lines)


def mix_slots(
    cached: int, slots: int = 30_000, *, hit_share: float = 0.8, s: float = 1.0, seed: int = 16
) -> list[int]:
    """The replayed sequence: an entry index (0..cached-1, Zipf by popularity) or MISS.

    Exactly round(slots * (1 - hit_share)) misses, shuffled in. Popularity ranks are spread
    over the entry indexes (rank r is entry r * 7919 mod cached) so the popular ones are not
    all n=2 or all neighbours."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    weights = list(itertools.accumulate(1.0 / (r**s) for r in range(1, cached + 1)))
    top = weights[-1]
    misses = round(slots * (1 - hit_share))
    out = [MISS] * misses
    for _ in range(slots - misses):
        rank = bisect_left(weights, rng.random() * top)
        out.append((rank * 7919) % cached)
    rng.shuffle(out)
    return out


def slot_kind(position: int, entry: int) -> str:
    """The kind of slot `position` (1-based, as wrk's Lua counts) holding `entry`:
    hit|miss - b64|url - n."""
    url = position % URL_EVERY == 0
    n = 2 if (position if entry == MISS else entry) % PAIR_EVERY == 0 else 1
    return f"{'miss' if entry == MISS else 'hit'}-{'url' if url else 'b64'}-{n}"


def mix_lua(slots: Sequence[int], *, keys: Sequence[str] = KEYS, limit_paths: bool = False) -> str:
    """A wrk script replaying `slots`: bodies built per request, keys in turn, and for the
    limit a path per kind (`/mix-<kind>`) instead of the generation route."""
    table = ",".join(str(k) for k in slots)
    auth = ",".join(_lua_str(f"Bearer {k}") for k in keys)
    head = _lua_str(json.dumps({"model": MODEL, "prompt": ""})[:-2])  # '{"model":..,"prompt": "'
    return "\n".join(
        [
            'wrk.method = "POST"',
            f"local slots = {{{table}}}",
            f"local keys = {{{auth}}}",
            'local nonce = tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000))',
            "local i, misses = 0, 0",
            f"local limit_paths = {'true' if limit_paths else 'false'}",
            "request = function()",
            "  i = i % #slots + 1",
            "  local k = slots[i]",
            f"  local url = (i % {URL_EVERY} == 0)",
            "  local prompt, n",
            "  if k < 0 then",
            "    misses = misses + 1",
            '    prompt = "bench mix miss " .. nonce .. " " .. misses',
            f"    n = (i % {PAIR_EVERY} == 0) and 2 or 1",
            "  else",
            '    prompt = "bench many " .. k',
            f"    n = (k % {PAIR_EVERY} == 0) and 2 or 1",
            "  end",
            f"  local body = {head} .. prompt .. "
            + _lua_str('", "size": "1024x1024", "quality": "low"')
            + " .. (n == 2 and ', \"n\": 2' or '')"
            + " .. (url and ', \"response_format\": \"url\"' or '') .. '}'",
            '  local headers = {["Content-Type"] = "application/json"}',
            "  if #keys > 0 then headers.Authorization = keys[i % #keys + 1] end",
            f'  local path = "{GEN}"',
            "  if limit_paths then",
            '    path = "/mix-" .. (k < 0 and "miss" or "hit") .. "-" .. '
            '(url and "url" or "b64") .. "-" .. n',
            "  end",
            "  return wrk.format(nil, path, headers, body)",
            "end",
            _DONE,
        ]
    )


def prime_bodies(slots: Sequence[int], count: int) -> list[str]:
    """The `count` most frequent (entry, format, n) requests of the sequence, as bodies."""
    seen: dict[str, int] = {}
    for position, entry in enumerate(slots, start=1):
        if entry == MISS:
            continue
        kind = slot_kind(position, entry)
        body = request_body(
            f"bench many {entry}",
            n=2 if kind.endswith("-2") else 1,
            response_format="url" if "-url-" in kind else None,
        )
        seen[body] = seen.get(body, 0) + 1
    return sorted(seen, key=lambda b: -seen[b])[:count]


async def send_all(base_url: str, bodies: Sequence[str], *, concurrency: int = 16) -> int:
    """POST every body once, `concurrency` at a time; how many answered 200."""
    ok = 0
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=300)

    async def one(session: aiohttp.ClientSession, body: str) -> None:
        nonlocal ok
        async with gate, session.post(base_url + GEN, data=body, headers=_JSON) as resp:
            await resp.read()
            ok += resp.status == 200

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, b) for b in bodies), return_exceptions=True)
    return ok


_JSON = {"Content-Type": "application/json"}
