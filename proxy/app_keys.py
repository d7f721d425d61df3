"""Typed application state (aiohttp AppKeys): everything a handler needs, no module globals."""

from __future__ import annotations

from aiohttp import web

from policies.catalog import Catalog
from proxy.access import Gatekeeper
from proxy.config import Settings
from proxy.hot import HotAnswers
from proxy.memory import B64Cache, BytesLRU
from proxy.observability.metrics import Metrics
from proxy.ports import BlobStore, EntryStore
from proxy.reservation_sweeper import ReservationSweeper
from proxy.service import ImageService

__all__ = [
    "B64",
    "BLOBS",
    "BLOB_MEMORY",
    "CACHE_OUTCOME",
    "CATALOG",
    "ENTRIES",
    "GATE",
    "HOT",
    "LOG_FIELDS",
    "METRICS",
    "REQUEST_ID",
    "SERVICE",
    "SETTINGS",
    "SWEEPER",
]

SETTINGS = web.AppKey("settings", Settings)
CATALOG = web.AppKey("catalog", Catalog)
SERVICE = web.AppKey("service", ImageService)
METRICS = web.AppKey("metrics", Metrics)
ENTRIES = web.AppKey("entries", EntryStore)
BLOBS = web.AppKey("blobs", BlobStore)
CACHE_OUTCOME = web.RequestKey("cache_outcome", str)
REQUEST_ID = web.RequestKey("request_id", str)
# Fields for the request's one log line (http.request_completed); never a prompt or secret.
LOG_FIELDS = web.RequestKey("log_fields", dict[str, object])
GATE = web.AppKey("gate", Gatekeeper)
B64 = web.AppKey("b64", B64Cache)
HOT = web.AppKey("hot", HotAnswers)
BLOB_MEMORY = web.AppKey("blob_memory", BytesLRU)
SWEEPER = web.AppKey("sweeper", ReservationSweeper)  # orphaned reservations, circuit holds
