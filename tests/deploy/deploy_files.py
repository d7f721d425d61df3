"""Readers of deploy/ shared by the deploy tests: where its files are, the Dockerfile's
instructions, the compose services, the Kubernetes manifests and the ${VAR} a config reads."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (add pyyaml to the test extras)")


ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"
DASHBOARD = GRAFANA / "dashboards" / "imagegate.json"
K8S_SHARED = DEPLOY / "k8s-shared"
K8S_MIGRATE = DEPLOY / "k8s-migrate"

METRICS_KEY_FILE = "/run/secrets/imagegate_metrics_key"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, args = (pending + line).partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    return out


def instructions(name: str, stage: str = "all") -> list[str]:
    """Arguments of every `name` instruction; stage="final" keeps the last stage's only."""
    found: list[str] = []
    for instruction, args in dockerfile():
        if instruction == "FROM" and stage == "final":
            found = []
        if instruction == name:
            found.append(args)
    return found


def healthcheck_command() -> list[str]:
    [args] = instructions("HEALTHCHECK", "final")
    _, _, command = args.partition("CMD ")
    parsed: list[str] = json.loads(command)
    return parsed


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions("ENV", "final"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def image_uid() -> int:
    [user] = instructions("USER", "final")
    return int(user.split(":")[0])


COMPOSE_FILES = ["compose.yaml", "compose.shared.yaml"]


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DEPLOY / name)
    return data


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path for the service's bind mounts (sources starting with .)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def k8s_docs() -> dict[str, dict[str, Any]]:
    """kind -> manifest, for every manifest kustomization.yaml lists."""
    docs = {}
    for name in load_yaml(K8S / "kustomization.yaml")["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            assert doc["kind"] not in docs, f"two {doc['kind']} manifests"
            docs[doc["kind"]] = doc
    return docs


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = k8s_docs()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [main] = pod_spec()["containers"]
    assert isinstance(main, dict)
    return main


def run(command: list[str], cwd: Path = ROOT) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{shlex.join(command)} failed:\n{output}"
    return output


_CONFIG_VAR = re.compile(r"\$\{([A-Za-z_]\w*)(?::([-?])[^}]*)?\}")


def strings(value: Any) -> Iterator[str]:
    """Every string inside parsed TOML."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from strings(item)


def config_variables(text: str) -> dict[str, bool]:
    """Variable -> required (`${VAR:?...}`) for every ${VAR} a config's values read."""
    found: dict[str, bool] = {}
    for value in strings(tomllib.loads(text)):
        for match in _CONFIG_VAR.finditer(value):
            found[match[1]] = found.get(match[1], False) or match[2] == "?"
    return found


def raw_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))
