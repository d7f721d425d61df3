"""Who is calling: API keys (the `KeyStore` port) and the admin key, with a key cache.

A key found is trusted for a second, and whether any key exists is read at most once a
second, so a hit authenticates without a store read (`known_caller`). Revocations through
this process's admin API forget the cache at once; other workers' and replicas' within the
second. While the key store cannot be reached (shared mode's PostgreSQL down), the last
answer read for a key stands, so hits keep being served; a key never seen is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from policies.errors import AuthenticationFailed
from policies.ledger_models import KeyRecord
from proxy.observability.events import Denied, Events
from proxy.ports import KeyStore
from proxy.stores.backend_errors import BackendUnavailable

__all__ = ["OPEN", "Authenticator", "Caller", "bearer"]

_KEYS_FRESH = 1.0  # seconds a read of the keys is trusted
_KEYS_KEPT = 10_000  # found keys kept at most (then all are forgotten at once)


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


OPEN = Caller(None, "")  # every request while no key exists


@dataclass
class Authenticator:
    keys: KeyStore
    events: Events
    clock: Callable[[], float]
    admin_key: str = ""
    share_across_teams: bool = False
    _has_keys: tuple[float, bool] = (-1.0, False)
    _keys: dict[bytes, tuple[float, KeyRecord]] = field(default_factory=dict)
    _generation: int = 0
    _refresh: asyncio.Task[bool] | None = None
    started: float = field(init=False)  # when this gateway started (`created` in /v1/models)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def known_caller(self, authorization: str | None) -> Caller | None:
        """The caller, when what `authenticate` would decide is already known here (no key
        exists, or the key was found within the second): the hit path's cheap case. None
        when `authenticate` must read or refuse."""
        checked, exists = self._has_keys
        now = self.clock()
        if now - checked >= _KEYS_FRESH:
            return None
        if not exists:
            return OPEN
        secret = bearer(authorization)
        key = self._kept_key(secret, now) if secret else None
        return self._caller(key) if key is not None and key.active else None

    async def authenticate(self, authorization: str | None) -> Caller:
        secret = bearer(authorization)
        if not await self.keys_exist():
            return OPEN
        if not secret:
            self.events.emit(Denied("auth"))
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        key = await self._find_key(secret)
        if key is None or not key.active:
            self.events.emit(Denied("auth"))
            raise AuthenticationFailed(
                "Incorrect API key provided, or the key was revoked. Ask the gateway's "
                "operator for a key (imagegate keys create)."
            )
        return self._caller(key)

    def _caller(self, key: KeyRecord) -> Caller:
        scope = "" if self.share_across_teams else (key.team or f"key:{key.name}")
        return Caller(key, scope)

    async def keys_exist(self) -> bool:
        """Whether keys exist (revoked ones count), read at most once a second. A stale
        answer is served while one refresh runs: requests never queue on the key store."""
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
        try:
            exists = bool(await self.keys.list())
        except BackendUnavailable:
            checked, known = self._has_keys
            if checked < 0:
                raise
            return known  # the last answer stands until the store answers again
        if generation == self._generation:  # no key changed here while it was read
            self._has_keys = (started, exists)
        return exists

    async def _find_key(self, secret: str) -> KeyRecord | None:
        """A key by its secret; found keys are kept for a second."""
        now = self.clock()
        kept = self._kept_key(secret, now)
        if kept is not None:
            return kept
        generation = self._generation
        try:
            key = await self.keys.find(secret)
        except BackendUnavailable:
            stale = self._keys.get(_digest(secret))
            if stale is None:
                raise
            return stale[1]  # read before the store went away: it stands meanwhile
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
        secret = bearer(authorization)
        admin = self.admin_key
        return bool(admin) and hmac.compare_digest(secret.encode(), admin.encode())

    async def sync_config(self, keys: Sequence[tuple[KeyRecord, str]]) -> int:
        """Keys declared in config are upserted (config wins); ones removed from it are
        revoked. How many were revoked."""
        revoked = await self.keys.sync_config(keys, self.clock())
        self.forget_key_cache()
        return revoked


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()  # secrets are not kept, even in memory


def bearer(header: str | None) -> str:
    """The token of an 'Authorization: Bearer <token>' header, or ''."""
    if not header:
        return ""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""
