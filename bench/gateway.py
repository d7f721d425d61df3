"""imagegate under test: its config (embedded defaults + the fake upstream), start-up, and
filling a data directory with many entries without calling anyone (scenario 5).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from bench.procs import Child, Procs, wait_http

__all__ = [
    "MODEL",
    "child_env",
    "populate",
    "request_body",
    "start_gateway",
    "write_config",
]

MODEL = "gpt-image-1.5"
# Variables that would make the gateway read another config or data dir, or other keys.
_DROP_ENV = ("IMAGEGATE_", "OPENAI_", "REPLICATE_", "FAL_")


def request_body(prompt: str, *, response_format: str | None = None, n: int = 1) -> str:
    """The JSON body every client of the bench sends (compact, keys in a fixed order)."""
    body: dict[str, object] = {
        "model": MODEL,
        "prompt": prompt,
        "size": "1024x1024",
        "quality": "low",
    }
    if n != 1:
        body["n"] = n
    if response_format is not None:
        body["response_format"] = response_format
    return json.dumps(body, separators=(",", ":"))


def write_config(
    path: Path,
    *,
    port: int,
    data_dir: Path,
    upstream_base_url: str | None,
    placeholder: bool = False,
    memory_mb: int | None = None,
) -> Path:
    """Only what the bench changes; everything else stays on the embedded defaults."""
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "",
        "[storage]",
        f"data_dir = {json.dumps(str(data_dir))}",
        "",
    ]
    if memory_mb is not None:
        lines += ["[cache]", f"memory_mb = {memory_mb}", ""]
    if placeholder:
        lines += ["[providers.placeholder]", "enabled = true", ""]
    if upstream_base_url is not None:
        lines += [
            "[providers.openai]",
            'api_key = "sk-bench"',
            f"base_url = {json.dumps(upstream_base_url)}",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_ENV)}
    env.update(extra or {})
    return env


def start_gateway(
    procs: Procs, config: Path, *, workers: int, name: str = "imagegate", port: int
) -> Child:
    """`imagegate serve --config CONFIG --workers N` (this interpreter's install of it)."""
    argv = [sys.executable, "-m", "proxy", "serve", "--config", str(config)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    child = procs.start(name, argv, env=child_env(), cwd=config.parent)
    wait_http(f"http://127.0.0.1:{port}/readyz", timeout=90, child=child)
    return child


def populate(
    config: Path,
    prompts: Iterable[str],
    png: bytes,
    *,
    provider: str = "openai",
    batch: int = 2_000,
) -> int:
    """Write one cached entry per prompt (all sharing one blob) straight into the data dir
    named by `config`, exactly as the gateway would have stored them; returns the count.

    Uses the gateway's own normalization and key function, so a request with
    `request_body(prompt)` is a HIT. Rows are committed in batches (one sqlite transaction
    per `batch`), which is what makes 100,000 entries take seconds instead of minutes.
    """
    from policies.models import Entry
    from policies.normalize import parse_generation, request_key
    from proxy.config import load_settings
    from proxy.stores.disk import DiskBlobStore, DiskEntryStore

    settings = load_settings(config, environ={})
    data_dir = settings.data_dir
    blobs = DiskBlobStore(data_dir / "blobs")
    entries = DiskEntryStore(data_dir / "entries")
    try:
        sha = blobs.put(png)
        now = time.time()
        count = 0
        pending: list[tuple[str, Entry]] = []

        def flush() -> None:
            with entries._cache.transact():  # one commit per batch; same rows as put()
                for key, entry in pending:
                    entries.put(key, 0, entry)
            pending.clear()

        for prompt in prompts:
            parsed = parse_generation(
                json.loads(request_body(prompt)),
                settings.catalog,
                default_model=settings.default_model,
            )
            req = parsed.request
            entry = Entry(
                blob=sha,
                format=req.output_format,
                width=1024,
                height=1024,
                model=req.model,
                provider=provider,
                cost_micros=0,
                created=now,
                prompt=req.prompt,
            )
            pending.append((request_key(req, ""), entry))
            count += 1
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        return count
    finally:
        entries.close()
        blobs.close()
