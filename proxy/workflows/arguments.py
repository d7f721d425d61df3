"""argparse `type=` converters with messages that say what was wrong."""

from __future__ import annotations

import argparse

from policies.budget import parse_usd

__all__ = [
    "DEFAULT_BASE_URL",
    "gateway_options",
    "non_negative_int",
    "positive_int",
    "seconds",
    "usd_micros",
    "whole",
]


def positive_int(text: str) -> int:
    value = whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def usd_micros(text: str) -> int:
    """Dollars ("25", "$0.04") as exact micro-USD; at most 6 decimals."""
    try:
        return parse_usd(text.strip().removeprefix("$"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def gateway_options(
    *, api_key: bool = False, admin_key: bool = False, timeout: float = 60.0, keep: bool = True
) -> argparse.ArgumentParser:
    """The options every client command shares, as an argparse parent: `--base-url`, then
    `--api-key` and/or `--admin-key`, then `--timeout`, worded the same everywhere.

    `keep=False` gives every option the default `argparse.SUPPRESS`, for a parser whose
    sub-commands take the same options again (`keys --base-url URL list` and `keys list
    --base-url URL` both work): the command reads them with `option(args, name)`."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("gateway")

    def default(value: object) -> object:
        return value if keep else argparse.SUPPRESS

    group.add_argument(
        "--base-url",
        default=default(DEFAULT_BASE_URL),
        metavar="URL",
        help=f"the gateway's root URL; a trailing /v1 is fine (default {DEFAULT_BASE_URL})",
    )
    if api_key:
        group.add_argument(
            "--api-key",
            default=default(None),
            metavar="KEY",
            help="the API key to send (default: $OPENAI_API_KEY; an open gateway needs none)",
        )
    if admin_key:
        group.add_argument(
            "--admin-key",
            default=default(None),
            metavar="KEY",
            help="the gateway's admin key (default: $IMAGEGATE_ADMIN_KEY)",
        )
    group.add_argument(
        "--timeout",
        type=seconds,
        default=default(timeout),
        metavar="SECONDS",
        help=f"per request attempt (default {timeout:g})",
    )
    return parent
