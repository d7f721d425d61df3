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


# Modules whose logic emits events (proxy.observability.events) and leaves metrics and log
# lines to the hooks (proxy.observability.hooks). One line per module; the rest of the
# shell joins as it is converted. Not listed on purpose: proxy/serving.py, the process
# shell, whose once-per-process lifecycle lines (server.started, auth.open, ...) are
# printed like its base-URL line, and proxy/observability/*, where the hooks live.
EMITTERS = (
    "proxy/generation.py",
    "proxy/router.py",
    "proxy/middlewares.py",
    "proxy/reservation_sweeper.py",
    "proxy/connection_guard.py",
    "proxy/service.py",
    "proxy/misses.py",
    "proxy/accounts.py",
    "proxy/admission.py",
    "proxy/authentication.py",
    "proxy/assembly.py",
    "proxy/routes/ab.py",
)
_METRIC_CALLS = {"inc", "dec", "observe", "set"}  # on anything named metric...
_LOG_CALLS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg"}
_OBSERVERS = {"prometheus_client", "logging", "proxy.observability.metrics"}
_OBSERVERS |= {"proxy.observability.logging", "proxy.observability.hooks"}


def observing_calls(source: str) -> list[str]:
    """What in `source` counts a metric or writes a log line itself (structlog's context
    binding is allowed: the middleware binds the request id for every line)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            found += [f"import {n}" for n in names if n in _OBSERVERS]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, ast.unparse(node.func.value)
            metric = name in {"labels", "child"} or (
                name in _METRIC_CALLS and "metric" in owner.lower()
            )
            logger = "log" in owner.lower()  # log, self.log, logger: not `decision.error()`
            if metric or (name in _LOG_CALLS and logger):
                found.append(f"{owner}.{name}() line {node.lineno}")
            if owner == "structlog" and name != "contextvars":
                found.append(f"structlog.{name}() line {node.lineno}")
    return found


def test_the_logic_emits_events_and_calls_no_metric_or_logger():
    root = Path(policies.__file__).parent.parent
    offenders = {path: observing_calls((root / path).read_text()) for path in EMITTERS}
    assert {path: calls for path, calls in offenders.items() if calls} == {}


def test_a_metric_or_log_call_would_be_found():
    source = (
        "import structlog\n"
        "from proxy.observability.metrics import Metrics\n"
        "log = structlog.get_logger('x')\n"
        "def f(self):\n"
        "    self.metrics.child(self.metrics.requests, 'a').inc()\n"
        "    self.metrics.retries.labels('p', 'm').inc()\n"
        "    log.warning('x.failed')\n"
        "    structlog.contextvars.bind_contextvars(request_id='r')\n"
    )
    found = observing_calls(source)
    assert found[0] == "import proxy.observability.metrics"
    assert "structlog.get_logger() line 3" in found
    assert (
        "self.metrics.child() line 5" in found and "self.metrics.retries.labels() line 6" in found
    )
    assert "log.warning() line 7" in found
    assert not [f for f in found if "contextvars" in f]
