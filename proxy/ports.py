"""The ports the service talks to. Each is a small Protocol with one contract test suite.

Every method that a network store (Redis, PostgreSQL, S3) may sit behind is `async`; what
must be atomic across replicas is one method (`LimitStore.take_all`, `Ledger.reserve`).
`proxy.stores.build.build_stores(settings) -> Stores` builds one adapter per port; the app
and the driver hold only the `Stores`. The embedded adapters are `proxy.stores.embedded`
(the ledger's database, the rate-limit table and the experiments, blocking work through
`asyncio.to_thread`), `proxy.stores.async_stores` (diskcache entries and blobs, read
inline) and `proxy.stores.flight_locks` (fcntl); the memory ones are `proxy.stores.memory*`
and `MemoryFlightLock`. The contract suites are `tests/proxy/contracts/`.

Wired:
- `EntryStore`, `BlobStore`: the driver's lookup and store steps (`proxy.service`,
  `proxy.misses`), /images, the dashboard's gallery, the A/B routes, /readyz, /metrics.
- `KeyStore`: `proxy.authentication.Authenticator` (the key cache, `keys_exist` as
  `bool(await list())`, the config's keys at start), the admin key routes, start-up's
  access summary, the budget gauges.
- `LimitStore`: `proxy.admission.Admission` (requests and images per minute).
- `Ledger`: `proxy.accounts.Accounts` (reserve, settle, release, abandon, `budget_left`,
  the hit rows' `record`), the reservation sweeper (`resolve_orphans`).
- `LedgerReports`: the admin spend, orphan and refund routes, the dashboard, the ledger
  gauges (`proxy.observability.ledger_metrics`, read before each scrape).
- `CircuitHolds`: an over-quote bill's hold (`proxy.misses`), the admin circuit reset, the
  sweeper's load of the holds.
- `FlightLock`: single-flight across processes in `proxy.misses` (acquire, then release
  with `landed`).
- `ExperimentStore`: the A/B routes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from policies.abtest import Counts
from policies.budget import BudgetSpec, BudgetUsage, Denied, Window
from policies.catalog import ModelSpec
from policies.ledger_models import KeyRecord, LedgerRow
from policies.models import Entry, GeneratedImage, ImageRequest
from policies.pricing import Usage
from policies.ratelimit import Allowed, Limited, Oversized, Rate
from proxy.stores.experiments import Conversion, Experiment, Impression

__all__ = [
    "AsyncBlobStore",
    "AsyncEntryStore",
    "BlobFile",
    "BlobStore",
    "CircuitHolds",
    "Clock",
    "EntryStore",
    "ExperimentStore",
    "FlightHold",
    "FlightLock",
    "KeyStore",
    "Ledger",
    "LedgerReports",
    "LimitStore",
    "Provider",
    "ProviderCall",
    "ProviderResult",
    "StoreStats",
]


class Clock(Protocol):
    def __call__(self) -> float:
        """Seconds since the epoch (wall clock); tests inject a manual one."""
        ...


@dataclass(frozen=True, slots=True)
class BlobFile:
    """A verified blob on disk that can be sent without reading it into memory."""

    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    items: int
    bytes: int
    evictions: int = 0
    healed: int = 0


class BlobStore(Protocol):
    """sha256 -> image bytes. Immutable, deduplicated; never returns bytes that don't hash
    to their address (a corrupt blob is deleted and reported as missing). Async: S3 may sit
    behind it (the disk adapter reads a page-cached file inline, `proxy.stores.async_stores`)."""

    async def put(self, data: bytes) -> str:
        """Store `data`; return its sha256 hex. Idempotent and atomic."""
        ...

    async def get(self, sha256: str) -> bytes | None: ...

    async def get_base64(self, sha256: str) -> bytes | None:
        """`base64.b64encode(get(sha256))`, or None. The disk store keeps the text of blobs
        served this way, so a repeated `b64_json` answer does not encode the image again."""
        ...

    async def open(self, sha256: str) -> BlobFile | None:
        """A verified file for `sha256`, or None (missing, corrupt, or not file-backed)."""
        ...

    async def ping(self) -> None:
        """Raise if the store is unreachable."""
        ...

    async def stats(self) -> StoreStats: ...


class EntryStore(Protocol):
    """(request key, index) -> Entry. Async: Redis may sit behind it."""

    async def get(self, key: str, index: int) -> Entry | None: ...

    async def put(
        self, key: str, index: int, entry: Entry, *, ttl: float | None = None
    ) -> None: ...

    async def delete(self, key: str, index: int) -> None: ...

    async def ping(self) -> None: ...

    async def stats(self) -> StoreStats: ...


# The names the contract suites were written against, before these became the ports.
AsyncBlobStore = BlobStore
AsyncEntryStore = EntryStore


class KeyStore(Protocol):
    """API keys, stored only as the sha256 of their secret."""

    async def create(self, key: KeyRecord, secret: str) -> None:
        """Store a new key. A taken name or secret raises InvalidRequest(code="key_exists")."""
        ...

    async def find(self, secret: str) -> KeyRecord | None:
        """The active key with this secret, or None (unknown or revoked)."""
        ...

    async def list(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        """Every key by name (revoked ones too unless told not to)."""
        ...

    async def revoke(self, name: str, now: float) -> bool:
        """Revoke an active key; False when there is no such active key."""
        ...

    async def set_budget(self, name: str, budget_micros: int | None, window: Window) -> bool:
        """Set (None: remove) a key's own budget; False when there is no such key."""
        ...

    async def sync_config(self, keys: Sequence[tuple[KeyRecord, str]], now: float) -> int:
        """Make the config's keys (record, secret) active as written, and revoke config keys
        no longer listed, in one step; how many were revoked."""
        ...


class Ledger(Protocol):
    """Money: budget reservations and the rows they settle as. Spend is rows only; open
    reservations are never spend, but `reserve` counts them so that spend + reserved never
    exceeds a budget, however many replicas reserve at once."""

    async def reserve(
        self,
        budgets: Sequence[BudgetSpec],
        amount_micros: int,
        now: float,
        owner: str,
        draft: LedgerRow | None = None,
    ) -> str | Denied:
        """Hold `amount_micros` on every budget, all or nothing, atomically; the reservation
        id. `draft`: the row an orphaned reservation is settled as."""
        ...

    async def settle(self, reservation_id: str, row: LedgerRow) -> None:
        """End the reservation with `row` (its cost at most the reservation). Idempotent."""
        ...

    async def release(self, reservation_id: str) -> None:
        """End the reservation with nothing charged."""
        ...

    async def abandon(self, reservation_id: str) -> LedgerRow | None:
        """End it as an ORPHANED row at its quote now (its call was cut off mid-flight, as
        when the gateway stops); None when it is no longer open."""
        ...

    async def resolve_orphans(self, owner: str, now: float, lease: float) -> list[LedgerRow]:
        """Heartbeat `owner`, then settle every reservation whose owner is gone (no heartbeat
        for `lease` seconds, or known dead) as an ORPHANED row at its quote."""
        ...

    async def record(self, rows: Sequence[LedgerRow]) -> None:
        """Rows without a reservation (hits: cost 0), in one commit."""
        ...

    async def budget_left(self, budgets: Sequence[BudgetSpec], now: float) -> list[BudgetUsage]:
        """Spent and reserved per budget, in the window containing `now`."""
        ...


class LedgerReports(Protocol):
    """What the admin routes, the dashboard and /metrics read from the ledger."""

    async def spend_by(self, group: Literal["key", "team", "model", "day"],
                       since: float | None = None) -> list[dict[str, Any]]: ...  # fmt: skip

    async def totals(self, since: float | None = None) -> dict[str, Any]:
        """hit_ratio (None without requests), open_reservations, and the all-time money
        totals: spend, over_quote, orphaned (count, micros), refunded."""
        ...

    async def rows(self, limit: int = 50, offset: int = 0) -> list[LedgerRow]: ...

    async def over_quote_by_model(self) -> list[tuple[str, str, int]]: ...

    async def orphans(self, limit: int = 100) -> list[dict[str, object]]: ...

    async def refund(self, row_id: int) -> tuple[int, bool] | None: ...


class CircuitHolds(Protocol):
    """Models stopped until an operator releases them (shared by every replica)."""

    async def hold_model(self, model: str, reason: str, now: float) -> None:
        """Stop `model` (the first reason is kept)."""
        ...

    async def release_hold(self, model: str) -> bool: ...

    async def holds(self) -> dict[str, str]: ...


class LimitStore(Protocol):
    """Rate-limit buckets shared by every process and replica."""

    async def take_all(
        self, takes: Sequence[tuple[str, Rate, int]], now: float
    ) -> Allowed | Limited | Oversized:
        """Take `cost` from each bucket (key, rate, cost), all or nothing, atomically
        (`policies.ratelimit.take_all` decides; a Redis adapter runs it as one script)."""
        ...


@dataclass(frozen=True, slots=True)
class FlightHold:
    """A held flight lock. `waited`: another holder had the key first and has let go
    (it landed or failed): look in the cache again before generating."""

    key: str
    waited: bool
    token: str = ""  # the adapter's own handle (a Redis lease's value)


class FlightLock(Protocol):
    """Single-flight of a request key across processes and replicas: a lease."""

    async def acquire(self, key: str) -> FlightHold:
        """Wait until this caller holds `key`."""
        ...

    async def renew(self, hold: FlightHold) -> bool:
        """Extend the lease; False when it was lost (expired and taken by another)."""
        ...

    async def release(self, hold: FlightHold, *, landed: bool) -> None:
        """Let go; waiters wake (`landed`: the images are in the stores now)."""
        ...


class ExperimentStore(Protocol):
    """A/B experiments: definitions with copies of their images, sticky assignments,
    conversions."""

    async def create(self, experiment: Experiment, images: Mapping[str, bytes]) -> bool:
        """Store a new experiment and its images; False when the name is taken."""
        ...

    async def get(self, name: str) -> Experiment | None: ...

    async def experiments(self) -> list[Experiment]:
        """Every experiment, oldest first (then by name)."""
        ...

    async def delete(self, name: str) -> bool:
        """Drop it with its events and the image copies no other experiment shows."""
        ...

    async def image(self, sha256: str) -> bytes | None:
        """The experiments' own copy of a variant image."""
        ...

    async def seen(self, experiment: str, subject: str) -> str | None:
        """The variant the subject was shown, or None."""
        ...

    async def impress(self, experiment: str, subject: str, variant: str, ts: float) -> Impression:
        """Record the subject's first impression; an `Impression` with the variant it is
        shown (an earlier impression's variant wins: assignment is sticky)."""
        ...

    async def convert(self, experiment: str, subject: str, ts: float) -> Conversion:
        """Count the subject's conversion once, for the variant it was shown."""
        ...

    async def counts(self, experiment: str) -> dict[str, Counts]: ...


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One upstream call: make `len(indexes)` images for `request`, which is already
    translated for `model` (its name, size, quality and prompt are what goes upstream)."""

    request: ImageRequest
    model: ModelSpec
    indexes: tuple[int, ...]
    uploads: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # sha256 -> bytes


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """What came back. Cost: `cost_micros` when the provider knows it exactly (the
    placeholder: 0); else the catalog's formula over `usage` (tokens) or `gpu_seconds`."""

    images: tuple[GeneratedImage, ...]
    cost_micros: int | None = None
    usage: Usage | None = None
    gpu_seconds: float | None = None


class Provider(Protocol):
    name: str

    def has_credentials(self) -> bool: ...

    async def generate(self, call: ProviderCall) -> ProviderResult:
        """Make the images or raise a `policies.errors.ProviderError`."""
        ...

    async def aclose(self) -> None: ...
