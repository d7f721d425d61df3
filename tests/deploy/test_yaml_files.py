"""Every YAML file in deploy/, and every YAML snippet in its README, parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.deploy_files import DEPLOY, yaml


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path):
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert docs and all(isinstance(doc, dict) for doc in docs)


def test_readme_yaml_snippets_parse():
    blocks = re.findall(r"```yaml\n(.*?)```", (DEPLOY / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        assert isinstance(yaml.safe_load(re.sub(r"(?m)^ {3}", "", block)), dict)
