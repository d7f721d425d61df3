"""Typed application state (aiohttp AppKeys): everything a handler needs, no module globals."""

from __future__ import annotations

from aiohttp import web

from policies.catalog import Catalog
from proxy.accounts import Accounts
from proxy.admission import Admission
from proxy.authentication import Authenticator
from proxy.config import Settings
from proxy.hot import HotAnswers
from proxy.memory import BytesLRU
from proxy.observability.events import Events
from proxy.observability.ledger_metrics import LedgerCollector
from proxy.observability.metrics import Metrics
from proxy.reservation_sweeper import ReservationSweeper
from proxy.service import ImageService
from proxy.stores.build import Stores

__all__ = [
    "ACCOUNTS",
    "ADMISSION",
    "AUTH",
    "BLOB_MEMORY",
    "CACHE_OUTCOME",
    "CATALOG",
    "EVENTS",
    "HOT",
    "LEDGER_METRICS",
    "LOG_FIELDS",
    "METRICS",
    "REQUEST_ID",
    "SERVICE",
    "SETTINGS",
    "STORES",
    "SWEEPER",
]

SETTINGS = web.AppKey("settings", Settings)
CATALOG = web.AppKey("catalog", Catalog)
SERVICE = web.AppKey("service", ImageService)  # the driver of an image request
STORES = web.AppKey("stores", Stores)  # every port (proxy.stores.build)
METRICS = web.AppKey("metrics", Metrics)
EVENTS = web.AppKey("events", Events)  # what the logic emits; metrics and logs are hooks
AUTH = web.AppKey("auth", Authenticator)  # who is calling (API keys, the admin key)
ADMISSION = web.AppKey("admission", Admission)  # allow-list, prompt policy, rate limits
ACCOUNTS = web.AppKey("accounts", Accounts)  # budgets and ledger rows
LEDGER_METRICS = web.AppKey("ledger_metrics", LedgerCollector)  # read before each scrape
CACHE_OUTCOME = web.RequestKey("cache_outcome", str)
REQUEST_ID = web.RequestKey("request_id", str)
# Fields for the request's one log line (http.request_completed); never a prompt or secret.
LOG_FIELDS = web.RequestKey("log_fields", dict[str, object])
HOT = web.AppKey("hot", HotAnswers)  # the driver's memo of rendered hits (service.hot)
BLOB_MEMORY = web.AppKey("blob_memory", BytesLRU)
SWEEPER = web.AppKey("sweeper", ReservationSweeper)  # orphaned reservations, circuit holds
