"""Hits counted in memory until the next flush of the hit rows.

A hit moves no money, and a popular request is repeated thousands of times a second; a
ledger row per repeat cost more than the rest of the hit (bench/: ~11 µs of a ~80 µs hit,
and a pause of the event loop at every flush). Hits of the same request key, by the same
API key, with the same model, provider and outcome, are counted into one row per flush:
`requests` repeats, `images` and `saved_micros` summed, `ts` and `request_id` of the first.
Totals, hit ratios and savings stay exact; a hit's own request id stays in its log line.
The savings counter (`imagegate_saved_usd_total`) moves when the rows are taken, once per row.
"""

from __future__ import annotations

from policies.ledger_models import LedgerRow

__all__ = ["HitTally"]

# (key_name, team, request_key, model, provider, cache)
_Group = tuple[str | None, str | None, str, str, str, str]


class _Count:
    """What the hits of one group add up to so far (few exist: one per distinct repeat in a
    quarter second, so the cyclic GC has little to walk)."""

    __slots__ = ("images", "request_id", "requests", "saved_micros", "ts")

    def __init__(self, ts: float, images: int, saved_micros: int, request_id: str | None) -> None:
        self.ts, self.images, self.saved_micros = ts, images, saved_micros
        self.request_id, self.requests = request_id, 1


class HitTally:
    def __init__(self) -> None:
        self._groups: dict[_Group, _Count] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def add(
        self,
        ts: float,
        key_name: str | None,
        team: str | None,
        request_key: str,
        model: str,
        provider: str,
        images: int,
        saved_micros: int,
        cache: str,
        request_id: str | None,
    ) -> None:
        group = (key_name, team, request_key, model, provider, cache)
        count = self._groups.get(group)
        if count is None:
            self._groups[group] = _Count(ts, images, saved_micros, request_id)
        else:
            count.images += images
            count.saved_micros += saved_micros
            count.requests += 1

    def take(self) -> list[LedgerRow]:
        """The counted rows; empties the tally."""
        groups, self._groups = self._groups, {}
        rows: list[LedgerRow] = []
        for (key_name, team, request_key, model, provider, cache), c in groups.items():
            rows.append(LedgerRow(c.ts, key_name, team, request_key, model, provider, c.images,
                                  0, c.saved_micros, cache, c.request_id, c.requests))  # fmt: skip
        return rows
