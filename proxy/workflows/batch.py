"""`imagegate batch FILE`: generate every request in FILE through a gateway, resumably.

The command line, the options, the run as a whole and its report; `runner` runs the lines,
`gateway` talks to the gateway, `manifest` owns the files, `batch_input` reads FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rich.console import Console

from proxy.workflows.arguments import (
    gateway_options,
    non_negative_int,
    positive_int,
    usd_micros,
    whole,
)
from proxy.workflows.batch_input import (
    FORMATS,
    BatchLine,
    Format,
    InputError,
    detect_format,
    read_lines,
)
from proxy.workflows.batch_quote import quote_batch
from proxy.workflows.gateway import BadBaseUrl, GatewayClient, root_url
from proxy.workflows.manifest import (
    JOURNAL,
    MANIFEST,
    DirectoryBusy,
    Journal,
    hold_directory,
)
from proxy.workflows.outcomes import LineFailed
from proxy.workflows.progress import (
    BatchProgress,
    Tally,
    dollars,
    print_failures,
    stop_text,
)
from proxy.workflows.runner import BatchRun, SpendCap, resumable, write_outputs

__all__ = ["BatchOptions", "register", "run"]

_DESCRIPTION: Final = """\
Generate every request in FILE through an imagegate gateway (the official openai SDK,
b64_json responses). Each line's images land in DIR as {line:04d}-{slug}[-{index}].{ext};
manifest.json records every image, failures.json every failed line, and a journal
(.batch-journal.jsonl) lets a re-run skip the lines already done, paying nothing twice.
"""
_EPILOG: Final = """\
FILE formats (by extension, or --format):
  .jsonl  one images.generate body per line, plus optional "name" and "tags"
  .csv    header row with a "prompt" column; optional name, tags, and request fields
  other   plain text, one prompt per line ("#" comments and blank lines skipped)

exit status: 0 every line succeeded or was resumed, 1 some line failed,
             2 usage error, 3 stopped by --budget-usd or by the gateway's budget
             (insufficient_quota: the lines not run are left for a re-run),
             4 stopped because no line can succeed: no API key given or the key
             refused (401/403), or the gateway unreachable after --retries (the
             lines not run are left for a re-run),
             130 / 143 interrupted by SIGINT / SIGTERM (outputs are written)
"""


# Request fields settable for every line (a line's own value wins): flag, field, type.
_DEFAULT_FIELDS: Final[tuple[tuple[str, str, Callable[[str], object]], ...]] = (
    ("--model", "model", str),
    ("--size", "size", str),
    ("--quality", "quality", str),
    ("--n", "n", positive_int),
    ("--output-format", "output_format", str),
    ("--output-compression", "output_compression", non_negative_int),
    ("--background", "background", str),
    ("--style", "style", str),
    ("--moderation", "moderation", str),
    ("--seed", "seed", whole),
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "batch",
        help="generate every request in a JSONL, CSV or text file, resumably",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[gateway_options(api_key=True, timeout=300.0)],
    )
    parser.add_argument("file", metavar="FILE", type=Path, help="the requests")
    parser.add_argument("--format", choices=FORMATS, help="override the format the name implies")
    _add_run_options(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each line's route, cache outcome and quote, and the total; "
        "generate, spend and write nothing",
    )
    defaults = parser.add_argument_group("request defaults (a line's own fields win)")
    for flag, name, kind in _DEFAULT_FIELDS:
        defaults.add_argument(
            flag,
            dest=f"field_{name}",
            type=kind,
            metavar=name.upper(),
            help=f"the request's {name} for lines that give none",
        )
    parser.set_defaults(func=run)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("batch-out"),
        metavar="DIR",
        help="images, manifest.json, failures.json (default ./%(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=4,
        metavar="N",
        help="requests in flight at once (default %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="retries of a 429, 5xx or connection error (default %(default)s)",
    )
    parser.add_argument(
        "--budget-usd",
        type=usd_micros,
        metavar="DOLLARS",
        help="stop starting lines once spent + the dearest line so far would pass this",
    )


@dataclass(frozen=True, slots=True)
class BatchOptions:
    file: Path
    fmt: Format
    base_url: str  # the gateway's root URL
    api_key: str | None  # None: none given, no Authorization header sent
    out: Path
    concurrency: int = 4
    retries: int = 2
    budget: int | None = None  # micro-USD
    timeout: float = 300.0
    defaults: dict[str, object] = field(default_factory=dict)


class UsageError(Exception):
    """Bad options or an unreadable FILE: exit status 2."""


def run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        lines = read_lines(options.file, options.fmt, options.defaults)
        if args.dry_run:  # quotes only: nothing generated, spent or written
            return asyncio.run(quote_batch(options, lines))
        options.out.mkdir(parents=True, exist_ok=True)
    except (UsageError, InputError) as exc:
        print(f"imagegate batch: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"imagegate batch: error: cannot create {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        with hold_directory(options.out):
            return asyncio.run(_main(options, lines))
    except DirectoryBusy as exc:
        print(f"imagegate batch: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        print("imagegate batch: interrupted; run it again to resume", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 143


async def _main(options: BatchOptions, lines: list[BatchLine]) -> int:
    """`run_batch`, with SIGTERM ending it as cleanly as Ctrl-C (outputs written)."""
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_batch(options, lines)


def _options(args: argparse.Namespace) -> BatchOptions:
    try:
        fmt = detect_format(args.file, args.format)
        base_url = root_url(args.base_url)
    except (InputError, BadBaseUrl) as exc:
        raise UsageError(str(exc)) from None
    defaults = {
        name: getattr(args, f"field_{name}")
        for _, name, _ in _DEFAULT_FIELDS
        if getattr(args, f"field_{name}") is not None
    }
    return BatchOptions(
        file=args.file,
        fmt=fmt,
        base_url=base_url,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or None,
        out=args.out,
        concurrency=args.concurrency,
        retries=args.retries,
        budget=args.budget_usd,
        timeout=args.timeout,
        defaults=defaults,
    )


async def run_batch(options: BatchOptions, lines: list[BatchLine]) -> int:
    """Run the batch; write manifest.json and failures.json even when interrupted."""
    journal = Journal(options.out / JOURNAL)
    resumed = resumable(lines, journal, options.out)
    pending = [line for line in lines if line.problem is None and line.line not in resumed]
    tally = Tally(total=len(lines), resumed=len(resumed))
    console = Console(stderr=True)
    gateway = GatewayClient(
        options.base_url, api_key=options.api_key, timeout=options.timeout, retries=options.retries
    )
    with BatchProgress(tally, console) as progress:
        batch = BatchRun(
            gateway,
            journal,
            options.out,
            concurrency=options.concurrency,
            budget=SpendCap(options.budget),
            progress=progress,
        )
        gateway.heard = batch.heard
        for line in lines:
            if line.problem is not None:
                batch.fail(line, LineFailed(line.problem, code="invalid_line"))
        try:
            await batch.run(pending)
        finally:
            await gateway.aclose()
            write_outputs(options.out, {**resumed, **batch.records}, batch.failures)
    return _report(console, options, batch)


def _report(console: Console, options: BatchOptions, batch: BatchRun) -> int:
    """Failures table, budget note and summary line; the exit status."""
    print_failures(console, batch.failures)
    tally = batch.tally
    if batch.stopped is not None and not batch.quota_exhausted:
        text = stop_text(
            batch.stopped,
            options.base_url,
            key_given=options.api_key is not None,
            skipped=[line.line for line in batch.skipped],
        )
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    elif batch.skipped and batch.quota_exhausted:
        console.print(
            f"budget: the gateway refused with insufficient_quota; {len(batch.skipped)} "
            f"line(s) not run, from line {batch.skipped[0].line}; re-run when the budget "
            "resets (done lines are kept)",
            markup=False,
        )
    elif batch.skipped:
        limit = dollars(options.budget or 0)
        console.print(
            f"budget: stopped at {dollars(tally.spent)} of {limit}; "
            f"{len(batch.skipped)} line(s) not run, from line {batch.skipped[0].line}",
            markup=False,
        )
    print(f"batch: {tally.total} lines · {tally.summary()} → {options.out / MANIFEST}")
    if batch.stopped is not None and not batch.quota_exhausted:
        return 4
    if batch.skipped:
        return 3
    return 1 if batch.failures else 0
