"""`KeyStore` on PostgreSQL: the `api_keys` table, secrets kept only as their sha256.

Taken names and secrets are refused by the table's unique constraints, never by a read
before the write, so two replicas creating the same key at once cannot both succeed.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

import asyncpg

from policies.budget import Window
from policies.errors import InvalidRequest
from policies.ledger_models import KeyRecord
from proxy.stores.ledger_keys import WINDOWS, hash_secret, key_values
from proxy.stores.pg_database import PgDatabase

__all__ = ["PgKeyStore"]

_COLUMNS: Final = (
    "name, team, created, revoked, budget_micros, budget_window, requests_per_minute, "
    "images_per_minute, models::text, source"
)
_INSERT: Final = (
    "INSERT INTO api_keys (name, team, created, revoked, budget_micros, budget_window, "
    "requests_per_minute, images_per_minute, models, source, key_hash) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)"
)
_UPSERT: Final = _INSERT + (
    " ON CONFLICT (name) DO UPDATE SET team = excluded.team, key_hash = excluded.key_hash,"
    " revoked = NULL, budget_micros = excluded.budget_micros,"
    " budget_window = excluded.budget_window,"
    " requests_per_minute = excluded.requests_per_minute,"
    " images_per_minute = excluded.images_per_minute, models = excluded.models,"
    " source = excluded.source"
)  # `created` is kept from the first run
_RETIRE: Final = (
    "UPDATE api_keys SET revoked = $1 WHERE source = 'config' AND revoked IS NULL "
    "AND NOT (name = ANY($2::text[])) RETURNING name"
)


def _record(raw: asyncpg.Record) -> KeyRecord:
    models = raw["models"]
    return KeyRecord(
        name=raw["name"],
        team=raw["team"],
        created=raw["created"],
        revoked=raw["revoked"],
        budget_micros=raw["budget_micros"],
        budget_window=raw["budget_window"],
        requests_per_minute=raw["requests_per_minute"],
        images_per_minute=raw["images_per_minute"],
        models=None if models is None else tuple(json.loads(models)),
        source=raw["source"],
    )


class PgKeyStore:
    """`PgKeyStore(db)`, `db` a migrated `PgDatabase`."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def create(self, key: KeyRecord, secret: str) -> None:
        values = key_values(key, secret)
        try:
            async with self._db.connection() as conn:
                await conn.execute(_INSERT, *values)
        except asyncpg.UniqueViolationError as exc:
            taken = "secret" if exc.constraint_name == "api_keys_key_hash_key" else "name"
            raise InvalidRequest(
                f"An API key with this {taken} already exists.", param=taken, code="key_exists"
            ) from None

    async def find(self, secret: str) -> KeyRecord | None:
        sql = f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked IS NULL"  # noqa: S608  # constant columns
        async with self._db.connection() as conn:
            found = await conn.fetchrow(sql, hash_secret(secret))
        return None if found is None else _record(found)

    async def list(self, *, include_revoked: bool = True) -> builtins.list[KeyRecord]:
        where = "" if include_revoked else " WHERE revoked IS NULL"
        sql = f'SELECT {_COLUMNS} FROM api_keys{where} ORDER BY name COLLATE "C"'  # noqa: S608  # constant
        async with self._db.connection() as conn:
            return [_record(r) for r in await conn.fetch(sql)]

    async def revoke(self, name: str, now: float) -> bool:
        sql = "UPDATE api_keys SET revoked = $1 WHERE name = $2 AND revoked IS NULL"
        async with self._db.connection() as conn:
            return str(await conn.execute(sql, now, name)) == "UPDATE 1"

    async def set_budget(self, name: str, budget_micros: int | None, window: Window) -> bool:
        if window not in WINDOWS:
            raise InvalidRequest(f"budget_window must be one of {', '.join(WINDOWS)}.")
        if budget_micros is not None and budget_micros < 0:
            raise InvalidRequest("A budget must be >= 0.", param="budget_usd")
        sql = "UPDATE api_keys SET budget_micros = $1, budget_window = $2 WHERE name = $3"
        async with self._db.connection() as conn:
            return str(await conn.execute(sql, budget_micros, window, name)) == "UPDATE 1"

    async def sync_config(self, keys: Sequence[tuple[KeyRecord, str]], now: float) -> int:
        """Upsert the config's keys and revoke the config keys it no longer lists, in one
        transaction: a replica never sees half a config."""
        values = [key_values(replace(k, source="config", revoked=None), s) for k, s in keys]
        try:
            async with self._db.transaction() as conn:
                for row in values:
                    await conn.execute(_UPSERT, *row)
                gone = await conn.fetch(_RETIRE, now, [k.name for k, _ in keys])
        except asyncpg.UniqueViolationError:
            raise InvalidRequest(
                "A config key has the same secret as another key.", param="keys", code="key_exists"
            ) from None
        return len(gone)
