"""Who may spend what: API keys, budgets (reserve, settle, release), rate limits, prompts.

The decisions are the core's (`policies.budget`, `policies.ratelimit`); this module holds the
ledger and the in-process token buckets and does the I/O between decisions.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog

from policies.budget import MICROS_PER_USD, BudgetSpec, Denied, pressure
from policies.errors import AuthenticationFailed, ContentPolicyViolation, InvalidRequest
from policies.ledger_models import KeyRecord, LedgerRow
from policies.ratelimit import Allowed, Limited, Oversized, Rate
from proxy.config_cost import CostSettings
from proxy.hit_tally import HitTally
from proxy.observability.metrics import Metrics
from proxy.stores.buckets import SharedBuckets
from proxy.stores.embedded import SqliteLimitStore
from proxy.stores.hit_rows import HitRowWriter
from proxy.stores.ledger import SqliteLedger, process_owner, row_values

__all__ = ["Caller", "CallerBudget", "Gatekeeper", "RateHeaders", "sync_config_keys"]

log = structlog.get_logger("imagegate.access")
_KEYS_FRESH = 1.0  # seconds a read of the keys table is trusted
_KEYS_KEPT = 10_000  # found keys kept at most (then all are forgotten at once)
_HIT_SLICE = 200  # hit rows inserted between two turns of the event loop (~1 ms)


@dataclass(frozen=True, slots=True)
class Caller:
    key: KeyRecord | None  # None: the gateway is open (no keys exist)
    scope: str  # cache namespace: the team, unless the cache is shared

    @property
    def name(self) -> str | None:
        return self.key.name if self.key else None

    @property
    def team(self) -> str | None:
        return self.key.team if self.key else None


_OPEN = Caller(None, "")  # every request while no key exists


@dataclass(frozen=True, slots=True)
class RateHeaders:
    limit: int
    remaining: int
    reset_seconds: float

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": _duration(self.reset_seconds),
        }


@dataclass
class Gatekeeper:
    ledger: SqliteLedger
    cost: CostSettings
    metrics: Metrics
    clock: Callable[[], float]
    share_across_teams: bool = False
    buckets: SharedBuckets = field(init=False)
    limits: SqliteLimitStore = field(init=False)  # the LimitStore port over `buckets`
    hit_rows: HitRowWriter = field(init=False)
    _has_keys: tuple[float, bool] = (-1.0, False)
    _deny: tuple[re.Pattern[str], ...] = ()
    hits: HitTally = field(default_factory=HitTally)  # counted until the next flush
    _unwritten: list[tuple[object, ...]] = field(default_factory=list)  # a failed flush's rows
    _keys: dict[bytes, tuple[float, KeyRecord]] = field(default_factory=dict)
    _generation: int = 0
    _refresh: asyncio.Task[bool] | None = None
    started: float = field(init=False)  # when this gateway started (`created` in /v1/models)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.buckets = SharedBuckets(self.ledger.path.parent / "state.sqlite3")
        self.limits = SqliteLimitStore(self.buckets)
        self.hit_rows = HitRowWriter(self.ledger.path)
        self._deny = tuple(re.compile(p) for p in self.cost.policy.deny_patterns)
        self._owner = process_owner()

    @property
    def owner(self) -> str:
        """This process as the owner of the reservations it makes."""
        return self._owner

    # ---- keys --------------------------------------------------------------------------

    def known_caller(self, authorization: str | None) -> Caller | None:
        """The caller, when what `authenticate` would decide is already known here (no key
        exists, or the key was found within the second): the hit path's cheap case. None
        when `authenticate` must read or refuse."""
        checked, exists = self._has_keys
        now = self.clock()
        if now - checked >= _KEYS_FRESH:
            return None
        if not exists:
            return _OPEN
        secret = _bearer(authorization)
        key = self._kept_key(secret, now) if secret else None
        return self._caller(key) if key is not None and key.active else None

    async def authenticate(self, authorization: str | None) -> Caller:
        secret = _bearer(authorization)
        if not await self.keys_exist():
            return _OPEN
        if not secret:
            self._deny_metric("auth")
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        key = await self._find_key(secret)
        if key is None or not key.active:
            self._deny_metric("auth")
            raise AuthenticationFailed(
                "Incorrect API key provided, or the key was revoked. Ask the gateway's "
                "operator for a key (imagegate keys create)."
            )
        return self._caller(key)

    def _caller(self, key: KeyRecord) -> Caller:
        scope = "" if self.share_across_teams else (key.team or f"key:{key.name}")
        return Caller(key, scope)

    async def keys_exist(self) -> bool:
        """Whether keys exist, read at most once a second. A stale answer is served while one
        refresh runs: requests never queue on the ledger (it may be committing hit rows)."""
        checked, exists = self._has_keys
        if self.clock() - checked < _KEYS_FRESH:
            return exists
        task = self._refresh
        if task is None or task.done():
            task = self._refresh = asyncio.create_task(self._load_has_keys(self._generation))
        if checked < 0:  # never read, or forgotten: nothing to serve meanwhile
            return await asyncio.shield(task)
        return exists

    async def _load_has_keys(self, generation: int) -> bool:
        started = self.clock()
        exists = await asyncio.to_thread(self.ledger.has_keys)
        if generation == self._generation:  # no key changed here while it was read
            self._has_keys = (started, exists)
        return exists

    async def _find_key(self, secret: str) -> KeyRecord | None:
        """A key by its secret; found keys are kept for a second (revocations here forget
        them at once, other workers' within the second, as for `keys_exist`)."""
        now = self.clock()
        kept = self._kept_key(secret, now)
        if kept is not None:
            return kept
        generation = self._generation
        key = await asyncio.to_thread(self.ledger.find_key, secret)
        if key is not None and generation == self._generation:
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            self._keys[_digest(secret)] = (now, key)
        return key

    def _kept_key(self, secret: str, now: float) -> KeyRecord | None:
        kept = self._keys.get(_digest(secret))
        return kept[1] if kept is not None and now - kept[0] < _KEYS_FRESH else None

    def forget_key_cache(self) -> None:
        self._generation += 1
        self._has_keys = (-1.0, False)
        self._keys.clear()
        self._refresh = None

    def is_admin(self, authorization: str | None) -> bool:
        secret = _bearer(authorization)
        admin = self.cost.admin_key
        return bool(admin) and hmac.compare_digest(secret.encode(), admin.encode())

    # ---- prompt policy -----------------------------------------------------------------

    def check_prompt(self, prompt: str | None) -> None:
        for pattern in self._deny:
            if prompt and pattern.search(prompt):
                self._deny_metric("prompt_policy")
                raise ContentPolicyViolation(
                    "Your request was rejected by this gateway's content policy. Change the "
                    "prompt; the operator's [policy] deny_patterns matched it.",
                    param="prompt",
                )

    def check_model(self, caller: Caller, model: str) -> None:
        if caller.key is not None and not caller.key.allows_model(model):
            self._deny_metric("model")
            allowed = ", ".join(caller.key.models or ())
            raise InvalidRequest(
                f"This API key may not use the model '{model}'. Allowed: {allowed}.",
                param="model",
                code="model_not_allowed",
            )

    # ---- rate limits -------------------------------------------------------------------

    async def take_request(self, caller: Caller) -> RateHeaders | None:
        if caller.key is None or caller.key.requests_per_minute is None:
            return None
        rate = Rate(caller.key.requests_per_minute)
        decision = await self._take([(f"req:{caller.key.name}", rate, 1)], "requests")
        return RateHeaders(decision.limit, decision.remaining, decision.reset_seconds)

    async def take_images(self, caller: Caller, count: int) -> None:
        if caller.key is None or caller.key.images_per_minute is None:
            return
        rate = Rate(caller.key.images_per_minute, unit="images")
        await self._take([(f"img:{caller.key.name}", rate, count)], "images")

    async def _take(self, takes: list[tuple[str, Rate, int]], unit: str) -> Allowed:
        # shared by every worker process; a wait for another's lock runs off the loop
        decision = await self.limits.take_all(takes, self.clock())
        if isinstance(decision, Limited):
            self._deny_metric("rate_limit")
            raise decision.error(unit)
        if isinstance(decision, Oversized):
            self._deny_metric("rate_limit")
            raise decision.error
        return decision

    # ---- budgets -----------------------------------------------------------------------

    def budgets(self, caller: Caller) -> tuple[BudgetSpec, ...]:
        specs: list[BudgetSpec] = []
        if self.cost.global_budget is not None:
            specs.append(self.cost.global_budget)
        specs += [b for b in self.cost.team_budgets if caller.team and b.name == caller.team]
        own = caller.key.budget_spec() if caller.key else None
        return (*specs, own) if own else tuple(specs)

    async def under_pressure(self, caller: Caller) -> bool:
        share = self.cost.pressure_share
        budgets = self.budgets(caller)
        if share is None or not budgets:
            return False
        usages = await asyncio.to_thread(self.ledger.budget_left, budgets, self.clock())
        return pressure(usages, share)

    async def reserve(self, caller: Caller, amount: int, draft: LedgerRow | None = None) -> str:
        """Hold `amount` on every budget of `caller` (raises BudgetExceeded). A call with no
        budget is reserved too: should this process die mid-call, `draft` is settled as an
        orphaned row, since the upstream may have billed it."""
        budgets = self.budgets(caller)
        decision = await asyncio.to_thread(
            self.ledger.reserve, budgets, amount, self.clock(), self._owner, draft
        )
        if isinstance(decision, Denied):
            self._deny_metric("budget")
            raise decision.error
        return decision

    async def settle(self, reservation: str | None, row: LedgerRow) -> None:
        if reservation is None:
            await asyncio.to_thread(self.ledger.record, row)
        else:
            await asyncio.to_thread(self.ledger.settle, reservation, row)
        self.metrics.spend.labels(row.key_name or "", row.team or "", row.model).inc(
            row.cost_micros / MICROS_PER_USD
        )

    async def release(self, reservation: str | None) -> None:
        if reservation is not None:
            await asyncio.to_thread(self.ledger.release, reservation)

    async def abandon(self, reservation: str | None) -> None:
        """A call abandoned in flight (the gateway stopping): settled as an orphan."""
        if reservation is not None:
            row = await asyncio.to_thread(self.ledger.abandon, reservation)
            if row is not None:
                log.warning("budget.reservation_orphaned", model=row.model, key=row.key_name)

    def record_hit(self, row: LedgerRow) -> None:
        """One hit's row, counted in memory until the next flush (`proxy.hit_tally`: repeats
        of one request share a row); see `flush_hits`. The hot hit path calls `hits.add`
        itself, without building a `LedgerRow`."""
        if row.cost_micros or row.requests != 1:
            raise ValueError("one hit's row (cost 0, 1 request); charged rows are settled")
        self.hits.add(
            row.ts, row.key_name, row.team, row.request_key, row.model, row.provider,
            row.images, row.saved_micros, row.cache, row.request_id,
        )  # fmt: skip

    async def flush_hits(self) -> None:
        """On the loop when the ledger's write lock is free (about a millisecond for a few
        hundred rows), else from a thread that waits for it. Rows that fail to write are
        kept for the next flush."""
        counted = self.hits.take()
        for row in counted:  # the savings counter moves once per counted row, not per hit
            saved = self.metrics.child(
                self.metrics.saved, row.key_name or "", row.team or "", row.model
            )
            saved.inc(row.saved_micros / MICROS_PER_USD)
        rows, self._unwritten = [*self._unwritten, *map(row_values, counted)], []
        if not rows:
            return
        writer = self.hit_rows
        try:
            if not writer.begin():
                await asyncio.to_thread(self.ledger.record_free, rows)
                return
            try:  # in slices of about a millisecond, serving requests in between
                for start in range(0, len(rows), _HIT_SLICE):
                    writer.insert(rows[start : start + _HIT_SLICE])
                    await asyncio.sleep(0)
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
        except BaseException:
            self._unwritten[:0] = rows
            raise

    async def run_flusher(self, interval: float = 0.25, checkpoint_every: int = 40) -> None:
        """Background task: write batched hit rows every `interval` seconds, and fold the
        ledger's WAL into the database every `checkpoint_every` flushes."""
        flushes = 0
        while True:
            await asyncio.sleep(interval)
            flushes += 1
            try:
                await self.flush_hits()
                if flushes % checkpoint_every == 0:
                    await asyncio.to_thread(self.ledger.checkpoint)
            except Exception:  # a full disk must not kill the flusher; rows are retried
                log.exception("ledger.flush_failed")

    def _deny_metric(self, reason: str) -> None:
        self.metrics.denials.labels(reason=reason).inc()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()  # secrets are not kept, even in memory


def _bearer(header: str | None) -> str:
    if not header:
        return ""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '12ms', '1.5s', '2m3s'."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3g}s" if rest else ""
    return f"{int(minutes)}m{text}" if minutes else text


async def sync_config_keys(gate: Gatekeeper) -> None:
    """Keys declared in config are upserted (config wins); ones removed from it are revoked."""
    now = gate.clock()
    configured = gate.cost.keys

    def sync() -> None:
        for key in configured:
            record = KeyRecord(
                name=key.name,
                team=key.team,
                created=now,
                budget_micros=key.budget_micros,
                budget_window=key.budget_window,
                requests_per_minute=key.requests_per_minute,
                images_per_minute=key.images_per_minute,
                models=key.models,
                source="config",
            )
            gate.ledger.upsert_config_key(record, key.secret)
        gate.ledger.retire_config_keys({k.name for k in configured}, now)

    await asyncio.to_thread(sync)
    gate.forget_key_cache()


@dataclass(frozen=True, slots=True)
class CallerBudget:
    """The budgets of one caller, as the generator reserves them attempt by attempt; `draft`
    is the row each reservation would be settled as, were its process to die mid-call."""

    gate: Gatekeeper
    caller: Caller
    draft: LedgerRow

    async def reserve(self, amount_micros: int, model: str, provider: str) -> str | None:
        draft = replace(self.draft, model=model, provider=provider, cost_micros=amount_micros)
        return await self.gate.reserve(self.caller, amount_micros, draft)

    async def release(self, reservation: str | None) -> None:
        await self.gate.release(reservation)

    async def abandon(self, reservation: str | None) -> None:
        await self.gate.abandon(reservation)
