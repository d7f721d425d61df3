"""The core stays pure: policies/ imports no I/O, async or observability library."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import policies

FORBIDDEN = {
    "asyncio",
    "aiohttp",
    "openai",
    "replicate",
    "prometheus_client",
    "structlog",
    "diskcache",
    "sqlite3",
    "redis",
    "httpx",
    "requests",
    "time",
    "os",
    "socket",
    "subprocess",
    "pathlib",
    "random",
    "proxy",
    "PIL",
}


def _modules():
    root = Path(policies.__file__).parent
    return sorted(root.glob("*.py"))


def test_policies_imports_nothing_impure():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
            if isinstance(node, ast.AsyncFunctionDef):
                offenders.append(f"{path.name}: async def {node.name}")
    assert offenders == []


def test_every_policies_module_declares_all():
    for info in pkgutil.iter_modules(policies.__path__):
        module = importlib.import_module(f"policies.{info.name}")
        exported = getattr(module, "__all__", None)
        assert exported is not None, info.name
        for name in exported:
            assert hasattr(module, name), f"policies.{info.name}.{name}"


def _sqlite_outside_stores(proxy: Path) -> list[str]:
    """What `grep -rln sqlite3 <proxy>` finds outside <proxy>/stores/."""
    stores = proxy / "stores"
    return sorted(
        str(path.relative_to(proxy))
        for path in proxy.rglob("*.py")
        if "sqlite3" in path.read_text() and stores not in path.parents
    )


def test_only_the_store_adapters_touch_sqlite():
    """The service, the routes and the observability code reach every store through a port
    (proxy/ports.py); only the adapters under proxy/stores/ know SQLite."""
    assert _sqlite_outside_stores(Path(policies.__file__).parent.parent / "proxy") == []


def test_the_sqlite_rule_finds_a_mention_outside_the_adapters(tmp_path):
    (tmp_path / "stores").mkdir()
    (tmp_path / "stores" / "ledger.py").write_text("import sqlite3\n")
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "admin.py").write_text('PATH = "ledger.sqlite3"\n')
    assert _sqlite_outside_stores(tmp_path) == ["routes/admin.py"]
