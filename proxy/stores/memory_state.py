"""`KeyStore`, `LimitStore`, `CircuitHolds` and `ExperimentStore` in memory, for unit tests
of the service: the same contracts as the SQLite adapters (`proxy.stores.embedded`)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import replace

from policies.abtest import Counts
from policies.budget import Window
from policies.errors import InvalidRequest
from policies.ledger_models import KeyRecord
from policies.ratelimit import Allowed, Bucket, Limited, Oversized, Rate, take_all
from proxy.stores.experiments import Conversion, Experiment, Impression
from proxy.stores.ledger_keys import hash_secret

__all__ = ["MemoryExperiments", "MemoryHolds", "MemoryKeyStore", "MemoryLimitStore"]


class MemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, tuple[KeyRecord, str]] = {}  # name -> (record, secret hash)

    def _check(self, key: KeyRecord, secret: str) -> str:
        if not secret:
            raise InvalidRequest("An API key's secret must not be empty.", param="key")
        digest = hash_secret(secret)
        if any(h == digest and n != key.name for n, (_, h) in self._keys.items()):
            raise InvalidRequest(
                "An API key with this secret already exists.", param="secret", code="key_exists"
            )
        return digest

    async def create(self, key: KeyRecord, secret: str) -> None:
        if key.name in self._keys:
            raise InvalidRequest(
                "An API key with this name already exists.", param="name", code="key_exists"
            )
        self._keys[key.name] = (key, self._check(key, secret))

    async def find(self, secret: str) -> KeyRecord | None:
        digest = hash_secret(secret)
        found = [r for r, h in self._keys.values() if h == digest and r.revoked is None]
        return found[0] if found else None

    async def list(self, *, include_revoked: bool = True) -> builtins.list[KeyRecord]:
        keys = sorted(self._keys.values(), key=lambda item: item[0].name)
        return [r for r, _ in keys if include_revoked or r.revoked is None]

    async def revoke(self, name: str, now: float) -> bool:
        found = self._keys.get(name)
        if found is None or found[0].revoked is not None:
            return False
        self._keys[name] = (replace(found[0], revoked=now), found[1])
        return True

    async def set_budget(self, name: str, budget_micros: int | None, window: Window) -> bool:
        if budget_micros is not None and budget_micros < 0:
            raise InvalidRequest("A budget must be >= 0.", param="budget_usd")
        found = self._keys.get(name)
        if found is None:
            return False
        record = replace(found[0], budget_micros=budget_micros, budget_window=window)
        self._keys[name] = (record, found[1])
        return True

    async def sync_config(self, keys: Sequence[tuple[KeyRecord, str]], now: float) -> int:
        for key, secret in keys:
            key = replace(key, source="config", revoked=None)
            old = self._keys.get(key.name)
            if old is not None:
                key = replace(key, created=old[0].created)
            self._keys[key.name] = (key, self._check(key, secret))
        listed = {key.name for key, _ in keys}
        gone = [
            name
            for name, (r, _) in self._keys.items()
            if r.source == "config" and r.revoked is None and name not in listed
        ]
        for name in gone:
            await self.revoke(name, now)
        return len(gone)


class MemoryLimitStore:
    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}

    async def take_all(
        self, takes: Sequence[tuple[str, Rate, int]], now: float
    ) -> Allowed | Limited | Oversized:
        current = [self._buckets.get(key) for key, _, _ in takes]
        buckets, decision = take_all(
            [(b, rate, cost) for b, (_, rate, cost) in zip(current, takes, strict=True)], now
        )
        for (key, _, _), bucket in zip(takes, buckets, strict=True):
            self._buckets[key] = bucket
        return decision


class MemoryHolds:
    def __init__(self) -> None:
        self._holds: dict[str, str] = {}

    async def hold_model(self, model: str, reason: str, now: float) -> None:
        self._holds.setdefault(model, reason)

    async def release_hold(self, model: str) -> bool:
        return self._holds.pop(model, None) is not None

    async def holds(self) -> dict[str, str]:
        return dict(self._holds)


class MemoryExperiments:
    def __init__(self) -> None:
        self._experiments: dict[str, Experiment] = {}
        self._images: dict[str, bytes] = {}
        self._shown: dict[tuple[str, str], str] = {}
        self._converted: dict[tuple[str, str], str] = {}

    async def create(self, experiment: Experiment, images: Mapping[str, bytes]) -> bool:
        if experiment.name in self._experiments:
            return False
        self._experiments[experiment.name] = experiment
        for sha, data in images.items():
            self._images.setdefault(sha, bytes(data))
        return True

    async def get(self, name: str) -> Experiment | None:
        return self._experiments.get(name)

    async def experiments(self) -> builtins.list[Experiment]:
        return sorted(self._experiments.values(), key=lambda e: (e.created, e.name))

    async def delete(self, name: str) -> bool:
        gone = self._experiments.pop(name, None) is not None
        for events in (self._shown, self._converted):
            for pair in [p for p in events if p[0] == name]:
                del events[pair]
        kept = {v.image for e in self._experiments.values() for v in e.variants}
        for sha in [s for s in self._images if s not in kept]:
            del self._images[sha]
        return gone

    async def image(self, sha256: str) -> bytes | None:
        return self._images.get(sha256)

    async def seen(self, experiment: str, subject: str) -> str | None:
        return self._shown.get((experiment, subject))

    async def impress(self, experiment: str, subject: str, variant: str, ts: float) -> Impression:
        first = (experiment, subject) not in self._shown
        return Impression(self._shown.setdefault((experiment, subject), variant), first)

    async def convert(self, experiment: str, subject: str, ts: float) -> Conversion:
        shown = self._shown.get((experiment, subject))
        if shown is None:
            return Conversion(None, False)
        first = (experiment, subject) not in self._converted
        self._converted.setdefault((experiment, subject), shown)
        return Conversion(shown, first)

    async def counts(self, experiment: str) -> dict[str, Counts]:
        shown = _tally(self._shown, experiment)
        converted = _tally(self._converted, experiment)
        return {v: Counts(shown.get(v, 0), converted.get(v, 0)) for v in shown | converted}


def _tally(events: Mapping[tuple[str, str], str], experiment: str) -> dict[str, int]:
    tally: dict[str, int] = {}
    for (name, _), variant in events.items():
        if name == experiment:
            tally[variant] = tally.get(variant, 0) + 1
    return tally
