"""What a batch leaves on disk: image files, `manifest.json`, `failures.json`, the journal.

Every file is written whole or not at all (temp file + `os.replace`). The journal is JSON
lines, appended, flushed and fsynced after each completed batch line, so a `kill -9` loses
only lines that were in flight; a torn last line is ignored when it is read back.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "FAILURES",
    "JOURNAL",
    "LOCK",
    "MANIFEST",
    "DirectoryBusy",
    "Journal",
    "JournalEntry",
    "Record",
    "file_extension",
    "hold_directory",
    "image_filename",
    "records_intact",
    "slugify",
    "write_bytes_atomic",
    "write_json_atomic",
]

MANIFEST: Final = "manifest.json"
FAILURES: Final = "failures.json"
JOURNAL: Final = ".batch-journal.jsonl"
LOCK: Final = ".batch-lock"
_SLUG_CHARS: Final = 48
_NOT_SLUG: Final = re.compile(r"[^a-z0-9]+")
_EXTENSIONS: Final = {
    "jpeg": "jpg",
    "jpg": "jpg",
    "png": "png",
    "webp": "webp",
    "gif": "gif",
    "svg": "svg",
}
_MAGIC: Final = ((b"\x89PNG", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF8", "gif"))
_UMASK: Final = os.umask(0o022)  # read once, at import, while nothing else runs
os.umask(_UMASK)

Record = dict[str, object]  # one manifest record (one image), JSON-ready


def slugify(text: str, limit: int = _SLUG_CHARS) -> str:
    """ASCII, lowercase, hyphen-separated, at most `limit` characters; never empty."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", folded.lower()).strip("-")
    if len(slug) > limit:
        cut = slug[:limit]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[limit // 2 :] else cut
    return slug.strip("-") or "image"


def image_filename(line: int, label: str, index: int, count: int, ext: str) -> str:
    """`0007-a-paper-crane.png`, or `0007-a-paper-crane-2.png` when the line asked n > 1."""
    suffix = f"-{index}" if count > 1 else ""
    return f"{line:04d}-{slugify(label)}{suffix}.{ext}"


def file_extension(data: bytes, output_format: str | None) -> str:
    """The extension for an image: its output format when known, else its magic bytes."""
    if output_format and output_format.lower() in _EXTENSIONS:
        return _EXTENSIONS[output_format.lower()]
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")):
        return "svg"
    return "png"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)  # mkstemp makes it private
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: object) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode())


def records_intact(out: Path, records: Iterable[Mapping[str, object]]) -> bool:
    """True when every record's file is on disk and hashes to its recorded sha256."""
    for record in records:
        file, sha = record.get("file"), record.get("sha256")
        if not isinstance(file, str) or not isinstance(sha, str):
            return False
        try:
            data = (out / file).read_bytes()
        except OSError:
            return False
        if hashlib.sha256(data).hexdigest() != sha:
            return False
    return True


@dataclass(frozen=True, slots=True)
class JournalEntry:
    line: int
    digest: str
    records: tuple[Record, ...]

    def to_json(self) -> str:
        value = {"line": self.line, "digest": self.digest, "records": list(self.records)}
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Journal:
    """`DIR/.batch-journal.jsonl`: one entry per completed line, durable once appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> dict[int, JournalEntry]:
        """The latest entry for each line; unreadable (torn) lines are skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        entries: dict[int, JournalEntry] = {}
        for raw in text.splitlines():
            entry = _entry(raw)
            if entry is not None:
                entries[entry.line] = entry
        return entries

    def append(self, entry: JournalEntry) -> None:
        data = (entry.to_json() + "\n").encode()
        with self._lock, open(self.path, "ab") as handle:
            if handle.tell() > 0 and not self._ends_with_newline():
                data = b"\n" + data  # a torn last entry must not swallow this one
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"


def _entry(raw: str) -> JournalEntry | None:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    line, digest, records = value.get("line"), value.get("digest"), value.get("records")
    if not isinstance(line, int) or not isinstance(digest, str) or not isinstance(records, list):
        return None
    if not all(isinstance(record, dict) for record in records):
        return None
    return JournalEntry(line, digest, tuple(records))


class DirectoryBusy(Exception):
    """Another batch is writing to the same output directory."""


@contextmanager
def hold_directory(out: Path) -> Iterator[None]:
    """An exclusive lock on DIR for one batch at a time; the OS drops it if the process dies."""
    with open(out / LOCK, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryBusy(f"another batch is writing to {out}") from None
        yield
