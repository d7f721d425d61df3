"""The peer: the LiteLLM proxy, installed into its own virtual environment and configured
as issue 7 asks, pointed at the same fake upstream as the gateway.

Fairness notes (all from the issue):
- `LITELLM_LOCAL_MODEL_COST_MAP=True`: the offline cost map (no fetch at start-up);
- a disk cache (diskcache, like imagegate's embedded store) with `aimage_generation` added
  to `supported_call_types`, and `enable_caching_on_provider_specific_optional_params: true`
  (else its cache key ignores `size` and `quality`);
- a per-image price on the deployment (`output_cost_per_image`), so cost tracking works;
- `--timeout_worker_healthcheck` raised so extra workers survive their slow start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.gateway import MODEL, child_env
from bench.procs import Child, Procs, wait_http

__all__ = [
    "LITELLM_SPEC",
    "PeerUnavailable",
    "default_venv",
    "ensure_litellm",
    "start_litellm",
    "write_litellm_config",
]

LITELLM_SPEC = "litellm[proxy]==1.108.7"
EXTRA_SPECS = ("diskcache",)
PRICE_PER_IMAGE = 0.04


class PeerUnavailable(RuntimeError):
    """The peer could not be installed or started; the bench goes on without it."""


@dataclass(frozen=True, slots=True)
class Litellm:
    venv: Path
    version: str

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def cli(self) -> Path:
        return self.venv / "bin" / "litellm"


def default_venv() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "imagegate-bench" / "litellm-venv"


def _version(python: Path) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - the peer's own interpreter
            [
                str(python),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_litellm(venv: Path, *, install: bool = True, log: Path | None = None) -> Litellm:
    """The peer's venv, made (and `pip install`ed) the first time; reused after that."""
    python = venv / "bin" / "python"
    wanted = LITELLM_SPEC.partition("==")[2]
    version = _version(python) if python.exists() else None
    if version == wanted and (venv / "bin" / "litellm").exists():
        return Litellm(venv, version)
    if not install:
        raise PeerUnavailable(f"LiteLLM {wanted} is not installed in {venv} (--no-install)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"peer: installing {LITELLM_SPEC} into {venv} (once; a few minutes)", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "-q", LITELLM_SPEC, *EXTRA_SPECS],
    ]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        for argv in steps:
            try:
                done = subprocess.run(  # noqa: S603 - venv and pip, our arguments
                    argv, stdout=out, stderr=subprocess.STDOUT, timeout=1200, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise PeerUnavailable(f"`{' '.join(argv[:4])}` failed: {exc}") from None
            if done.returncode != 0:
                raise PeerUnavailable(
                    f"`{' '.join(argv[2:])}` exited {done.returncode}"
                    + (f" (see {log})" if log else "")
                )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    version = _version(python)
    if version is None:
        raise PeerUnavailable(f"litellm does not import in {venv} after installing")
    return Litellm(venv, version)


def write_litellm_config(path: Path, *, upstream_base_url: str, cache_dir: Path) -> Path:
    """LiteLLM's YAML config (JSON is valid YAML, so no YAML library is needed here)."""
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": upstream_base_url,
                    "api_key": "sk-bench",
                    "output_cost_per_image": PRICE_PER_IMAGE,
                },
                "model_info": {
                    "output_cost_per_image": PRICE_PER_IMAGE,
                    "mode": "image_generation",
                },
            }
        ],
        "litellm_settings": {
            "cache": True,
            "cache_params": {
                "type": "disk",
                "disk_cache_dir": str(cache_dir),
                "supported_call_types": [
                    "acompletion",
                    "aembedding",
                    "atext_completion",
                    "aimage_generation",
                ],
            },
            "enable_caching_on_provider_specific_optional_params": True,
            "telemetry": False,
        },
        "general_settings": {
            # Open, like the gateway with no API keys (no auth on either side).
            "dangerously_permit_weak_or_unset_master_key": True,
        },
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def start_litellm(
    procs: Procs,
    peer: Litellm,
    config: Path,
    *,
    port: int,
    workers: int,
    name: str = "litellm",
) -> Child:
    argv = [
        str(peer.cli),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
        "--timeout_worker_healthcheck",
        "300",
    ]
    env = child_env(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    child = procs.start(name, argv, env=env, cwd=config.parent)
    started = time.monotonic()
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=240, child=child)
    except (RuntimeError, TimeoutError) as exc:
        procs.stop(child)
        raise PeerUnavailable(f"LiteLLM did not start: {exc}") from None
    print(f"peer: LiteLLM up with {workers} worker(s) in {time.monotonic() - started:.1f}s")
    return child
