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
    "populate_plan",
    "request_body",
    "start_gateway",
    "write_config",
]

MODEL = "gpt-image-1.5"
LAG_INTERVAL = 0.02
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
    extra: str = "",
    metrics_key: str | None = None,
    backend: str | None = None,
    event_loop: str | None = None,
) -> Path:
    """Only what the bench changes; everything else stays on the embedded defaults.

    `extra`: more TOML (whole sections: keys, `[storage] backend`, ...) appended as is."""
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        *([f"metrics_key = {json.dumps(metrics_key)}"] if metrics_key else []),
        *([f"event_loop = {json.dumps(event_loop)}"] if event_loop else []),
        # The lag probe every 20 ms instead of 100: 50 samples a second of run, so that a
        # run's p99 is a p99 (the probe is one timer; the default is 0.1).
        f"loop_lag_interval_seconds = {LAG_INTERVAL}",
        "",
        "[storage]",
        *([f"backend = {json.dumps(backend)}"] if backend else []),
        f"data_dir = {json.dumps(str(data_dir))}",
        "",
    ]
    if memory_mb is not None and "[cache]" not in extra:
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
    if extra:
        lines.append(extra)
    path.write_text("\n".join(lines))
    return path


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_ENV)}
    env.update(extra or {})
    return env


def start_gateway(
    procs: Procs,
    config: Path,
    *,
    workers: int,
    name: str = "imagegate",
    port: int,
    env: Mapping[str, str] | None = None,
) -> Child:
    """`imagegate serve --config CONFIG --workers N` (this interpreter's install of it)."""
    argv = [sys.executable, "-m", "proxy", "serve", "--config", str(config)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    child = procs.start(name, argv, env=child_env(env), cwd=config.parent)
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
    named by `config`, exactly as the gateway would have stored them; returns the count."""
    return populate_plan(config, ((p, png, 1) for p in prompts), provider=provider, batch=batch)


def populate_plan(
    config: Path,
    plan: Iterable[tuple[str, bytes, int]],
    *,
    provider: str = "openai",
    batch: int = 2_000,
    scope: str = "",
) -> int:
    """Write the entries of `plan` (prompt, image bytes, images `n`) straight into the data
    dir named by `config`, exactly as the gateway would have stored them; returns the count.

    Uses the gateway's own normalization, key function and disk adapters, so a request with
    `request_body(prompt, n=k)` (k <= n) is a HIT for a caller of cache scope `scope`. Each
    distinct image is one blob; rows are committed in batches (one sqlite transaction per
    `batch`), which is what makes 100,000 entries take seconds instead of minutes.
    """
    from policies.models import Entry
    from policies.normalize import parse_generation, request_key
    from proxy.config import load_settings
    from proxy.stores.disk import DiskBlobStore, DiskEntryStore

    settings = load_settings(config, environ={})
    blobs = DiskBlobStore(settings.data_dir / "blobs")
    entries = DiskEntryStore(settings.data_dir / "entries")
    try:
        shas: dict[bytes, str] = {}
        now = time.time()
        count = 0
        pending: list[tuple[str, int, Entry]] = []

        def flush() -> None:
            with entries._cache.transact():  # one commit per batch; same rows as put()
                for key, index, entry in pending:
                    entries.put(key, index, entry)
            pending.clear()

        for prompt, image, n in plan:
            sha = shas.get(image) or shas.setdefault(image, blobs.put(image))
            req = parse_generation(
                json.loads(request_body(prompt)),
                settings.catalog,
                default_model=settings.default_model,
            ).request
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
            key = request_key(req, scope)
            pending += [(key, index, entry) for index in range(n)]
            count += 1
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        return count
    finally:
        entries.close()
        blobs.close()
