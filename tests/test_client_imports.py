"""The client commands are clients of a gateway: proxy/workflows/ imports nothing from the
server shell (only proxy.workflows.*, policies.*, the standard library and third-party
libraries), and loading every command loads no server module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import proxy.workflows

WORKFLOWS = Path(proxy.workflows.__file__).parent
ROOT = WORKFLOWS.parents[1]


def _imported(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against proxy.workflows
                names.append("proxy.workflows." + (node.module or ""))
            elif node.module:
                names.append(node.module)
    return names


def _server_shell(name: str) -> bool:
    return name.split(".")[0] == "proxy" and not name.startswith("proxy.workflows")


def test_no_workflows_module_imports_the_server_shell():
    offenders = [
        f"{path.name}: {name}"
        for path in sorted(WORKFLOWS.glob("*.py"))
        for name in _imported(path)
        if _server_shell(name)
    ]
    assert offenders == []


def test_the_check_sees_a_server_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import proxy.serving\nfrom proxy.app_keys import GATE\nfrom proxy import app\n"
    )
    assert [n for n in _imported(sample) if _server_shell(n)] == [
        "proxy.serving",
        "proxy.app_keys",
        "proxy",  # `from proxy import app` names the package; the line is refused too
    ]


def test_loading_the_cli_and_every_command_loads_no_server_module():
    probe = (
        "import sys, proxy.cli\n"
        "proxy.cli.build_parser()\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith(('proxy', 'openai')))))\n"
    )
    done = subprocess.run(  # a fresh interpreter: this one has loaded the server already
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = done.stdout.split()
    assert "proxy.workflows.gateway" in loaded
    assert [m for m in loaded if m not in ("proxy", "proxy.cli") and _server_shell(m)] == []
    assert "openai" not in loaded  # loaded by the first image request, not by `imagegate serve`
