"""`imagegate serve` in shared mode when a backend cannot be reached at start: one line that
names it (host and port, never a password), a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared.backends import SharedBackends, closed_port

ROOT = Path(__file__).resolve().parents[2]


def serve(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGATE_", "OPENAI_"))}
    env |= {"PYTHONPATH": str(ROOT), "IMAGEGATE_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", "0"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["redis", "postgres", "s3"])
def test_a_backend_that_cannot_be_reached_is_named_in_one_line(
    shared: SharedBackends, tmp_path: Path, backend: str
) -> None:
    port = closed_port()
    config = tmp_path / "shared.toml"
    config.write_text(shared.moved(**{backend: port}).toml())
    done = serve(config, tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"imagegate: cannot reach {backend} at 127.0.0.1:{port}: ")
    assert "Traceback" not in done.stderr and shared.s3.secret_access_key not in done.stderr
    assert done.stdout == ""  # no base URL: it never listened


def test_a_missing_database_is_named_too(shared: SharedBackends, tmp_path: Path) -> None:
    config = tmp_path / "shared.toml"
    config.write_text(
        shared.toml().replace(shared.dsn, shared.dsn.rsplit("/", 1)[0] + "/imagegate_nothing")
    )
    done = serve(config, tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "imagegate: cannot reach postgres at 127.0.0.1:5432: InvalidCatalogNameError: "
        'database "imagegate_nothing" does not exist'
    ]
