"""Typed application state (aiohttp AppKeys): everything a handler needs, no module globals."""

from __future__ import annotations

from aiohttp import web

from policies.catalog import Catalog
from proxy.access import Gatekeeper
from proxy.b64cache import B64Cache
from proxy.config import Settings
from proxy.hot import HotAnswers
from proxy.observability.metrics import Metrics
from proxy.ports import BlobStore, EntryStore
from proxy.service import ImageService

__all__ = [
    "B64",
    "BLOBS",
    "CACHE_OUTCOME",
    "CATALOG",
    "ENTRIES",
    "GATE",
    "HOT",
    "METRICS",
    "REQUEST_ID",
    "SERVICE",
    "SETTINGS",
]

SETTINGS = web.AppKey("settings", Settings)
CATALOG = web.AppKey("catalog", Catalog)
SERVICE = web.AppKey("service", ImageService)
METRICS = web.AppKey("metrics", Metrics)
ENTRIES = web.AppKey("entries", EntryStore)
BLOBS = web.AppKey("blobs", BlobStore)
CACHE_OUTCOME = web.RequestKey("cache_outcome", str)
REQUEST_ID = web.RequestKey("request_id", str)
GATE = web.AppKey("gate", Gatekeeper)
B64 = web.AppKey("b64", B64Cache)
HOT = web.AppKey("hot", HotAnswers)
