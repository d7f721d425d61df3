"""An `Entry` as compact JSON text: the one format every entry store writes.

The disk store and the Redis store share it, so an entry means the same bytes wherever it
is kept (and `imagegate migrate` can copy the text as it is)."""

from __future__ import annotations

import json

from policies.models import Entry

__all__ = ["dump_entry", "load_entry"]


def dump_entry(entry: Entry) -> str:
    """Sorted keys, no spaces: stable text for the same entry."""
    return json.dumps(entry.to_json(), separators=(",", ":"), sort_keys=True)


def load_entry(text: str | bytes) -> Entry | None:
    """The entry, or None when the text is unreadable (e.g. written by a newer version
    sharing the store): a miss, which the service's next put overwrites."""
    try:
        parsed = json.loads(text)
        return Entry.from_json(parsed) if isinstance(parsed, dict) else None
    except (ValueError, KeyError, TypeError, AssertionError):
        return None
