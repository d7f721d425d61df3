"""The values `imagegate migrate` moves between stores, and what a load reports.

A record carries what the target needs to hold the same thing, and nothing a store keeps for
itself: no key secret (only its sha256, which is all any KeyStore keeps), no open
reservation, no rate-limit bucket, no process heartbeat, no running spend total (the target
derives those from the rows it inserts).

Ledger rows have no natural key across stores (row ids are each store's own), so a row's
identity is the sha256 of its fields that never change after it is written, plus its
ordinal among identical rows (`ledger_identities`): a re-run, a resumed run or a copy back
finds the rows it already copied however many stores they passed through. `cost_micros` and
`refunded_micros` are left out because a refund changes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from policies.ledger_models import KeyRecord, LedgerRow
from policies.models import Entry
from proxy.stores.experiments import Experiment

__all__ = [
    "EntryRecord",
    "EventRecord",
    "ExperimentRecord",
    "HoldRecord",
    "KeyRow",
    "LedgerIdentities",
    "LedgerRecord",
    "Loaded",
    "ledger_identities",
]


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """A cached entry; `expires_at` (seconds since the epoch) is None when it never expires."""

    key: str
    index: int
    entry: Entry
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class KeyRow:
    """An API key as stored: its record and the sha256 of its secret (never the secret)."""

    record: KeyRecord
    secret_sha256: str


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """A settled ledger row. `reservation`: the reservation it settled, if any (kept so a
    late settle of it stays idempotent); `identity`: see the module docstring."""

    row: LedgerRow
    identity: str
    refunded_micros: int = 0
    reservation: str | None = None


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """A model stopped until an operator releases it."""

    model: str
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class ExperimentRecord:
    """An experiment with the experiments' own copies of its images (sha256 -> bytes)."""

    experiment: Experiment
    images: Mapping[str, bytes] = field(repr=False)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A subject's impression or conversion; a conversion is copied after the impressions."""

    kind: Literal["impression", "conversion"]
    experiment: str
    subject: str
    variant: str
    ts: float


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a load did: `copied`, `present` (the target had it already), and `skipped`
    (reason -> count) for records that were not copied and are not in the target."""

    copied: int = 0
    present: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)

    def __add__(self, other: Loaded) -> Loaded:
        skipped = dict(self.skipped)
        for reason, count in other.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        return Loaded(self.copied + other.copied, self.present + other.present, skipped)

    @property
    def seen(self) -> int:
        return self.copied + self.present + sum(self.skipped.values())


def _stable_fields(row: LedgerRow) -> tuple[object, ...]:
    return (row.ts, row.key_name, row.team, row.request_key, row.model, row.provider,
            row.images, row.saved_micros, row.cache, row.request_id, row.requests,
            row.over_quote_micros)  # fmt: skip


class LedgerIdentities:
    """Names ledger rows fed in (ts, then the store's insertion) order: identical rows share
    a ts, so the n-th of them within its ts is `digest#n`. Holds one ts's digests at a time."""

    def __init__(self) -> None:
        self._ts: float | None = None
        self._seen: dict[str, int] = {}

    def __call__(self, row: LedgerRow) -> str:
        if row.ts != self._ts:
            self._ts, self._seen = row.ts, {}
        # repr: exact for floats (shortest round-trip form), and None is not "None"
        digest = hashlib.sha256(repr(_stable_fields(row)).encode()).hexdigest()[:32]
        ordinal = self._seen.get(digest, 0)
        self._seen[digest] = ordinal + 1
        return f"{digest}#{ordinal}"


def ledger_identities(rows: Iterable[LedgerRow]) -> list[str]:
    """The identities of `rows`, given in (ts, insertion) order."""
    name = LedgerIdentities()
    return [name(row) for row in rows]
