"""Every client command takes the gateway options the same way, and explains every option."""

from __future__ import annotations

import argparse

import pytest

from proxy.cli import build_parser

GATEWAY = {
    "batch": ("--base-url", "--api-key", "--timeout"),
    "ab": ("--base-url", "--api-key", "--admin-key", "--timeout"),
    "report": ("--base-url", "--admin-key", "--timeout"),
    "keys create": ("--base-url", "--admin-key", "--timeout"),
    "keys list": ("--base-url", "--admin-key", "--timeout"),
    "keys revoke": ("--base-url", "--admin-key", "--timeout"),
    "keys set-budget": ("--base-url", "--admin-key", "--timeout"),
}
POSITIONALS = {"batch": ["in.txt"], "keys create": ["web"], "keys revoke": ["web"]}
POSITIONALS["keys set-budget"] = ["web", "5"]
VALUES = {
    "--base-url": ("base_url", "http://gw:9000"),
    "--api-key": ("api_key", "sk-x"),
    "--admin-key": ("admin_key", "adm-x"),
    "--timeout": ("timeout", 7.0),
}


def subparser(path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("command", GATEWAY)
@pytest.mark.parametrize("where", ["after", "before"])
def test_gateway_options_anywhere(command, where):
    words = command.split()
    options = [part for flag in GATEWAY[command] for part in (flag, str(VALUES[flag][1]))]
    if where == "after":
        argv = [*words, *POSITIONALS.get(command, []), *options]
    else:  # straight after the command (for keys: before the action)
        argv = [words[0], *options, *words[1:], *POSITIONALS.get(command, [])]
    args = build_parser().parse_args(argv)
    for flag in GATEWAY[command]:
        dest, value = VALUES[flag]
        assert getattr(args, dest) == value, (argv, flag)


@pytest.mark.parametrize("command", [*GATEWAY, "keys"])
def test_every_option_has_help(command):
    parser = subparser(command)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"imagegate {command}: {action.option_strings or action.dest}"


def test_the_gateway_options_read_the_same_everywhere():
    helps: dict[str, set[str]] = {}
    for command in GATEWAY:
        for action in subparser(command)._actions:
            if "--base-url" in action.option_strings or "--api-key" in action.option_strings:
                helps.setdefault(action.option_strings[0], set()).add(str(action.help))
    assert all(len(texts) == 1 for texts in helps.values()), helps
