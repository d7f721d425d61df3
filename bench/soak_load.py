"""The soak's load driver (started by `bench/soak.py`, a process of its own).

It runs a fake OpenAI upstream on loopback (tests/fakes: distinct real images per prompt,
so the cache keeps filling and evicting), writes its base URL to `--upstream-file`, waits
for the gateway, then sends a paced, repeatable mix (`--rng`) through openai SDK clients until
`--seconds` have passed or `--max-requests` were sent: new prompts (misses, n 1..3),
repeats of recent ones (hits, or misses again once evicted), edits, a few 1024x1024
GPT-image calls, and url answers whose `/images/<sha>` it fetches. Every image it gets
must hash to its address. A summary (counts, statuses, bad images) goes to `--summary`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.fakes.images import make_png
from tests.fakes.openai_server import FakeOpenAI

__all__ = ["Driver", "main"]

EDIT_INPUT = make_png(64, 64, (200, 80, 40, 255), alpha=True)


def _call(rng: random.Random, made: int) -> dict[str, Any]:
    """One request's parameters; `made` is how many prompts exist so far."""
    roll = rng.random()
    fresh = roll < 0.35 or made == 0
    topic = made if fresh else rng.randrange(max(0, made - 400), made)
    params: dict[str, Any] = {
        "model": "dall-e-2",
        "prompt": f"soak topic {topic}",
        "n": rng.choice((1, 1, 1, 2, 3)),
        "size": "256x256",
        "response_format": "url" if rng.random() < 0.3 else "b64_json",
    }
    if rng.random() < 0.05:
        params |= {"model": "gpt-image-1-mini", "size": "1024x1024", "quality": "low"}
    if rng.random() < 0.15:
        params["image"] = ("in.png", EDIT_INPUT, "image/png")
    return params | {"fresh": fresh}


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.rng)  # noqa: S311  # a repeatable mix, not a secret
        self.made = 0
        self.sent = 0
        self.statuses: Counter[str] = Counter()
        self.cache: Counter[str] = Counter()
        self.bad_images = 0
        self.images = 0
        self.largest_image = 0
        self.http = httpx.AsyncClient(timeout=60)  # for /images/ (the SDK only does /v1)

    async def run(self, client: openai.AsyncOpenAI, deadline: float) -> None:
        interval = 1 / self.args.rate
        next_at = time.monotonic()

        async def worker() -> None:
            nonlocal next_at
            while time.monotonic() < deadline and self.sent < self.args.max_requests:
                wait = next_at - time.monotonic()
                next_at = max(next_at, time.monotonic()) + interval
                if wait > 0:
                    await asyncio.sleep(wait)
                params = _call(self.rng, self.made)
                self.made += 1 if params.pop("fresh") else 0
                self.sent += 1
                await self.one(client, params)

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))

    async def one(self, client: openai.AsyncOpenAI, params: dict[str, Any]) -> None:
        api = client.images.with_raw_response
        try:
            if "image" in params:
                raw = await api.edit(**params)
            else:
                raw = await api.generate(**params)
        except openai.APIStatusError as exc:
            self.statuses[str(exc.status_code)] += 1
            return
        except openai.APIConnectionError:
            self.statuses["connection"] += 1
            return
        self.statuses[str(raw.status_code)] += 1
        self.cache[raw.headers.get("x-cache", "")] += 1
        for item in json.loads(raw.content)["data"]:
            if item.get("b64_json"):
                self.check(base64.b64decode(item["b64_json"]), None)
            else:
                got = await self.http.get(item["url"])
                found = re.search(r"/images/([0-9a-f]{64})\.", item["url"])
                self.check(got.content, found[1] if found else "")

    def check(self, data: bytes, sha: str | None) -> None:
        self.images += 1
        self.largest_image = max(self.largest_image, len(data))
        if sha is not None and hashlib.sha256(data).hexdigest() != sha:
            self.bad_images += 1

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "seconds": round(seconds, 1),
            "requests": self.sent,
            "ok": self.statuses["200"],
            "statuses": dict(self.statuses),
            "cache": dict(self.cache),
            "prompts": self.made,
            "images": self.images,
            "bad_images": self.bad_images,
            "largest_image": self.largest_image,
        }


async def _wait_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            await asyncio.sleep(0.2)


async def main_async(args: argparse.Namespace) -> None:
    async with FakeOpenAI() as fake:
        args.upstream_file.write_text(fake.base_url + "\n")
        await _wait_ready(f"{args.gateway}/readyz", 120)
        driver = Driver(args)
        started = time.monotonic()
        async with openai.AsyncOpenAI(
            base_url=f"{args.gateway}/v1", api_key=args.key, max_retries=0, timeout=60
        ) as client:
            run = asyncio.create_task(driver.run(client, started + args.seconds))
            while not run.done():  # the fake keeps a log of every request: keep it short
                await asyncio.wait({run}, timeout=10)
                fake.reset()
                fake.request_ids.clear()
            await run
        await driver.http.aclose()
        summary = driver.summary(time.monotonic() - started)
        args.summary.write_text(json.dumps(summary) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--key", required=True)
    parser.add_argument("--upstream-file", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rng", type=int, default=1)
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
