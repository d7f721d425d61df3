"""Scenario 8's runs: the mix (`bench.mix`) on the gateway, the limit and LiteLLM, at 1 and
2 workers, on the store-hit data dir (`bench.store_hits.fill_store`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench.gateway import request_body
from bench.mix import KEYS, METRICS_TOKEN, keys_config, mix_lua, mix_slots, prime_bodies, send_all
from bench.scenarios import GEN, JSON, Harness, Server, _phase, http
from bench.store_hits import fill_store, small_count

__all__ = ["phase_mix"]

KINDS = [f"{hm}-{fmt}-{n}" for hm in ("hit", "miss") for fmt in ("b64", "url") for n in (1, 2)]
PEER_PRIMED = 300  # LiteLLM's cache: the most frequent requests of the sequence, by HTTP


def _capture(gw: Server, into: Path) -> None:
    """The gateway's exact answer per kind (a miss kind answers like the hit of its shape)."""
    auth = {**JSON, "Authorization": f"Bearer {KEYS[0]}"}
    for kind in KINDS:
        _, fmt, n = kind.split("-")
        entry = 0 if n == "2" else 1  # entry 0 holds two images, entry 1 one
        body = request_body(
            f"bench many {entry}", n=int(n), response_format="url" if fmt == "url" else None
        )
        status, headers, answer = http("POST", gw.url(GEN), body.encode(), auth)
        if status != 200 or headers.get("X-Cache") != "HIT":
            raise RuntimeError(f"mix priming {kind}: {status} {headers.get('X-Cache')}")
        if len(json.loads(answer)["data"]) != int(n):
            raise RuntimeError(f"mix priming {kind}: not {n} images")
        (into / f"post-mix-{kind}.json").write_bytes(answer)


def _peer_primed(h: Harness, peer: Server, slots: list[int]) -> None:
    bodies = prime_bodies(slots, PEER_PRIMED)
    for _ in range(2):  # LiteLLM writes its cache after answering: a second pass settles it
        asyncio.run(send_all(peer.url(""), bodies))
    h.quiet_upstream_calls()
    if any("LiteLLM on the mix" in n for n in h.notes):
        return
    h.notes.append(
        f"LiteLLM on the mix: no API keys (its keys need its own database); its cache was "
        f"primed over HTTP with the sequence's {len(bodies)} most frequent requests, so its "
        "hit share is lower than the gateway's (see its upstream_calls)"
    )


def phase_mix(h: Harness, workers: int) -> None:
    cached = small_count(h.cfg.entries_big)
    slots = mix_slots(cached)
    h.extra["mix"] = {
        "cached_requests": cached,
        "slots": len(slots),
        "hit_share": round(sum(1 for k in slots if k >= 0) / len(slots), 3),
        "zipf_s": 1.0,
        "keys": len(KEYS),
    }
    with _phase(h, f"scenario 8: the mix, {workers} worker(s)"):
        data = fill_store(h)
        gw = h.start_gateway(
            f"imagegate-mix-w{workers}",
            data,
            workers,
            extra=keys_config(),
            metrics_token=METRICS_TOKEN,
        )
        bodies = h.dir / "mix-bodies"
        bodies.mkdir(exist_ok=True)
        limit = peer = None
    try:
        _capture(gw, bodies)
        limit = h.start_limit(bodies, workers, upstream=True)
        peer = h.start_peer(workers)
        if peer is not None:
            _peer_primed(h, peer, slots)
        case = "mix 80% hits, Zipf, keys"
        h.measure("8", case, gw, connections=64, script=mix_lua(slots), path=GEN)
        limit_script = mix_lua(slots, keys=(), limit_paths=True)
        h.measure("8", case, limit, connections=64, script=limit_script, path=GEN)
        if peer is not None:
            h.measure("8", case, peer, connections=64, script=mix_lua(slots, keys=()), path=GEN)
    finally:
        h.stop(gw, limit, peer)
