"""The ledger's SQLite database (connection, schema, transactions) and its API keys table.

`proxy.stores.ledger.SqliteLedger` builds on `KeyTable`; use that class, not this one.

A key is stored only as the sha256 of its secret: `list_keys` and `KeyRecord` never carry
the hash or the secret, and `find_key` looks a secret up by its hash alone.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Final, get_args

from policies.budget import Window
from policies.errors import InvalidRequest
from policies.ledger_models import KeyRecord
from proxy.stores.sqlite_db import SqliteDatabase

__all__ = ["SCHEMA", "WINDOWS", "KeyTable", "hash_secret", "key_values"]

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS api_keys (
  name TEXT PRIMARY KEY, team TEXT, key_hash TEXT NOT NULL UNIQUE, created REAL NOT NULL,
  revoked REAL, budget_micros INTEGER, budget_window TEXT, requests_per_minute INTEGER,
  images_per_minute INTEGER, models_json TEXT, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL,
  amount_micros INTEGER NOT NULL, scopes_json TEXT NOT NULL, draft_json TEXT);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS circuit_holds (
  model TEXT PRIMARY KEY, reason TEXT NOT NULL, since REAL NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_owner ON reservations (owner);
CREATE TABLE IF NOT EXISTS ledger (
  id INTEGER PRIMARY KEY, ts REAL NOT NULL, key_name TEXT, team TEXT, request_key TEXT,
  model TEXT, provider TEXT, images INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
  saved_micros INTEGER NOT NULL, cache TEXT, request_id TEXT, reservation TEXT UNIQUE,
  requests INTEGER NOT NULL DEFAULT 1, over_quote_micros INTEGER NOT NULL DEFAULT 0,
  refunded_micros INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS ledger_ts ON ledger (ts);
CREATE INDEX IF NOT EXISTS ledger_key_ts ON ledger (key_name, ts);
CREATE INDEX IF NOT EXISTS ledger_team_ts ON ledger (team, ts);
CREATE TABLE IF NOT EXISTS spend (
  scope TEXT NOT NULL, name TEXT NOT NULL, win TEXT NOT NULL, start INTEGER NOT NULL,
  micros INTEGER NOT NULL, PRIMARY KEY (scope, name, win, start)) WITHOUT ROWID
"""
# Columns added since the first ledgers: an older file is upgraded in place when opened.
_ADDED: Final = (
    ("ledger", "requests", "INTEGER NOT NULL DEFAULT 1"),
    ("ledger", "over_quote_micros", "INTEGER NOT NULL DEFAULT 0"),
    ("ledger", "refunded_micros", "INTEGER NOT NULL DEFAULT 0"),
    ("reservations", "draft_json", "TEXT"),
)
# Indexes on added columns, made once they exist: the rare rows the reports pick out.
_LATE_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS ledger_over_quote ON ledger (provider, model) "
    "WHERE over_quote_micros > 0",
    "CREATE INDEX IF NOT EXISTS ledger_orphaned ON ledger (ts) WHERE cache = 'ORPHANED'",
)
WINDOWS: Final[tuple[str, ...]] = get_args(Window)
_COLUMNS: Final = (
    "name, team, created, revoked, budget_micros, budget_window, requests_per_minute, "
    "images_per_minute, models_json, source"
)
_INSERT: Final = f"INSERT INTO api_keys ({_COLUMNS}, key_hash) VALUES ({', '.join('?' * 11)})"  # noqa: S608  # constant
_UPSERT: Final = _INSERT + (
    " ON CONFLICT (name) DO UPDATE SET team = excluded.team, key_hash = excluded.key_hash,"
    " revoked = NULL, budget_micros = excluded.budget_micros,"
    " budget_window = excluded.budget_window,"
    " requests_per_minute = excluded.requests_per_minute,"
    " images_per_minute = excluded.images_per_minute, models_json = excluded.models_json,"
    " source = excluded.source"
)


def hash_secret(secret: str) -> str:
    """sha256 of the secret. No salt or slow KDF: issued keys are long random strings, so a
    leaked hash cannot be brute-forced, and lookup stays one indexed equality on the hash
    (no timing depends on a key's name or on how much of a guess matched)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(raw: sqlite3.Row) -> KeyRecord:
    models = None if raw["models_json"] is None else tuple(json.loads(raw["models_json"]))
    return KeyRecord(
        name=raw["name"],
        team=raw["team"],
        created=raw["created"],
        revoked=raw["revoked"],
        budget_micros=raw["budget_micros"],
        budget_window=raw["budget_window"],
        requests_per_minute=raw["requests_per_minute"],
        images_per_minute=raw["images_per_minute"],
        models=models,
        source=raw["source"],
    )


def key_values(key: KeyRecord, secret: str) -> tuple[object, ...]:
    """A key's row, in the column order both key tables (SQLite, PostgreSQL) share."""
    if not secret:
        raise InvalidRequest("An API key's secret must not be empty.", param="key")
    if key.budget_window is not None and key.budget_window not in WINDOWS:
        raise InvalidRequest(f"budget_window must be one of {', '.join(WINDOWS)}.")
    models = None if key.models is None else json.dumps(list(key.models))
    return (key.name, key.team, key.created, key.revoked, key.budget_micros,
            key.budget_window, key.requests_per_minute, key.images_per_minute, models,
            key.source, hash_secret(secret))  # fmt: skip


class KeyTable(SqliteDatabase):
    """The connection, its transactions, and the `api_keys` methods of the ledger."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        super().__init__(path, SCHEMA, busy_timeout=busy_timeout, rows=True)
        with self._write() as db:  # ledgers made by earlier versions gain their new columns
            for table, column, ddl in _ADDED:
                columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
            for statement in _LATE_INDEXES:
                db.execute(statement)

    def create_key(self, key: KeyRecord, secret: str) -> None:
        """Store a new key (its secret only as a hash). A taken name or secret is a 400."""
        try:
            with self._write() as db:
                db.execute(_INSERT, key_values(key, secret))
        except sqlite3.IntegrityError as exc:
            taken = "name" if "api_keys.name" in str(exc) else "secret"
            raise InvalidRequest(
                f"An API key with this {taken} already exists.", param=taken, code="key_exists"
            ) from None

    def upsert_config_key(self, key: KeyRecord, secret: str) -> None:
        """Declare a key from config: config is authoritative, so this (re)activates it and
        overwrites its team, limits and secret; `created` is kept from the first run."""
        key = replace(key, source="config", revoked=None)
        try:
            with self._write() as db:
                db.execute(_UPSERT, key_values(key, secret))
        except sqlite3.IntegrityError:
            raise InvalidRequest(
                f"Config key {key.name!r} has the same secret as another key.",
                param="keys",
                code="key_exists",
            ) from None

    def retire_config_keys(self, keep: Collection[str], now: float | None = None) -> int:
        """Revoke keys that came from config but are no longer in it; how many."""
        stamp = time.time() if now is None else now
        with self._write() as db:
            names = [r[0] for r in db.execute(
                "SELECT name FROM api_keys WHERE source = 'config' AND revoked IS NULL"
            )]  # fmt: skip
            gone = [(stamp, name) for name in names if name not in keep]
            db.executemany("UPDATE api_keys SET revoked = ? WHERE name = ?", gone)
            return len(gone)

    def find_key(self, secret: str) -> KeyRecord | None:
        """The active key with this secret, or None (unknown or revoked)."""
        sql = f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked IS NULL"  # noqa: S608  # constant columns
        with self._read() as db:
            found = db.execute(sql, (hash_secret(secret),)).fetchone()
        return None if found is None else _record(found)

    def has_keys(self) -> bool:
        """Whether any key was ever issued or configured (revoked ones count: revoking the
        last key must not open the gateway)."""
        with self._read() as db:
            found = db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone()
        return found is not None

    def get_key(self, name: str) -> KeyRecord | None:
        sql = f"SELECT {_COLUMNS} FROM api_keys WHERE name = ?"  # noqa: S608  # constant columns
        with self._read() as db:
            found = db.execute(sql, (name,)).fetchone()
        return None if found is None else _record(found)

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        """Every key by name: names, teams and limits, never a hash or a secret."""
        where = "" if include_revoked else " WHERE revoked IS NULL"
        sql = f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY name"  # noqa: S608  # constant
        with self._read() as db:
            return [_record(r) for r in db.execute(sql)]

    def revoke_key(self, name: str, now: float | None = None) -> bool:
        """Revoke an active key; False when there is no such active key."""
        stamp = time.time() if now is None else now
        with self._write() as db:
            sql = "UPDATE api_keys SET revoked = ? WHERE name = ? AND revoked IS NULL"
            return db.execute(sql, (stamp, name)).rowcount == 1

    def set_budget(self, name: str, budget_micros: int | None, window: Window = "day") -> bool:
        """Set (or with None, remove) a key's own budget; False when there is no such key."""
        if window not in WINDOWS:
            raise InvalidRequest(f"budget_window must be one of {', '.join(WINDOWS)}.")
        if budget_micros is not None and budget_micros < 0:
            raise InvalidRequest("A budget must be >= 0.", param="budget_usd")
        with self._write() as db:
            sql = "UPDATE api_keys SET budget_micros = ?, budget_window = ? WHERE name = ?"
            return db.execute(sql, (budget_micros, window, name)).rowcount == 1
