"""The request line, `http.request_completed`, written at the cost of a few byte joins.

Every request writes one, so its cost is every request's: `RequestLines` renders the JSON
pieces that repeat (the request's shape, its fields) once and joins them with the three that
change (`ms`, the request id, the timestamp), into the very bytes `info_line` would write.
"""

from __future__ import annotations

import orjson
import structlog

from proxy.observability.logging import PID, direct_lines, info_line, timestamp_bytes

__all__ = ["RequestLines"]

# Keys of the request line that its fields may not hold (they would change the key order).
_REQUEST_KEYS = frozenset(
    {"method", "route", "status", "cache", "ms", "request_id", "sample_rate"}
    | {"event", "pid", "level", "timestamp"}
)
_KEPT_FIELDS = 1024  # rendered field sets kept at most (then all are forgotten at once)


class RequestLines:
    """The request line (`event`), byte for byte what `info_line` writes for the fields
    `method, route, status, cache, ms, **fields, request_id[, sample_rate]`, from JSON
    pieces rendered once: per request shape (method, route, status, cache), and per fields
    dict (a memo answer's is one dict for all its repeats: the dicts are not changed once
    emitted). Only `ms`, the request id and the timestamp are rendered per line. Fields
    that would reorder the keys, a terminal or info lines off: `info_line` itself."""

    def __init__(self, logger: structlog.typing.FilteringBoundLogger, event: str) -> None:
        self._logger = logger
        self._event = event
        self._heads: dict[tuple[str, str, int, str], bytes] = {}
        self._fields: dict[int, tuple[dict[str, object], bytes | None]] = {}
        self._tail = b',"event":%s,"pid":%d,"level":"info","timestamp":"' % (
            orjson.dumps(event),
            PID,
        )

    def write(
        self,
        method: str,
        route: str,
        status: int,
        cache: str,
        ms: float,
        fields: dict[str, object],
        request_id: str,
        sample_rate: float | None = None,
    ) -> None:
        lines = direct_lines()
        kept = self._fields.get(id(fields))
        if kept is None or kept[0] is not fields:
            kept = self._keep(fields)
        middle = kept[1]
        if lines is None or middle is None:
            line: dict[str, object] = {
                "method": method, "route": route, "status": status, "cache": cache, "ms": ms,
                **fields, "request_id": request_id,
            }  # fmt: skip
            if sample_rate is not None:
                line["sample_rate"] = sample_rate
            info_line(self._logger, self._event, line)
            return
        head = self._heads.get((method, route, status, cache))
        if head is None:
            head = self._head(method, route, status, cache)
        sampled = b',"sample_rate":' + orjson.dumps(sample_rate) if sample_rate is not None else b""
        lines.msg(
            b"".join((
                head, orjson.dumps(ms), middle, b',"request_id":', orjson.dumps(request_id),
                sampled, self._tail, timestamp_bytes(), b'"}',
            ))
        )  # fmt: skip

    def _head(self, method: str, route: str, status: int, cache: str) -> bytes:
        shape = {"method": method, "route": route, "status": status, "cache": cache, "ms": 0}
        head = orjson.dumps(shape)[: -len(b"0}")]
        if len(self._heads) >= _KEPT_FIELDS:
            self._heads.clear()
        self._heads[(method, route, status, cache)] = head
        return head

    def _keep(self, fields: dict[str, object]) -> tuple[dict[str, object], bytes | None]:
        middle: bytes | None = None
        if _REQUEST_KEYS.isdisjoint(fields):
            try:
                middle = b"," + orjson.dumps(fields)[1:-1] if fields else b""
            except TypeError:  # a key or value orjson does not take: structlog's path
                middle = None
        if len(self._fields) >= _KEPT_FIELDS:
            self._fields.clear()
        kept = self._fields[id(fields)] = (fields, middle)
        return kept
