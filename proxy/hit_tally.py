"""Hits counted in memory until the next flush of the hit rows.

A hit moves no money, and a popular request is repeated thousands of times a second; a
ledger row per repeat cost more than the rest of the hit (bench/: ~11 µs of a ~80 µs hit,
and a pause of the event loop at every flush). Hits of the same request key, by the same
API key, with the same model, provider and outcome, are counted into one row per flush:
`requests` repeats, `images` and `saved_micros` summed, `ts` and `request_id` of the first.
Totals, hit ratios and savings stay exact; a hit's own request id stays in its log line.
"""

from __future__ import annotations

__all__ = ["HitTally"]

# (key_name, team, request_key, model, provider, cache)
_Group = tuple[str | None, str | None, str, str, str, str]


class HitTally:
    def __init__(self) -> None:
        # group -> [ts, images, saved_micros, requests, request_id]; few entries (one per
        # distinct repeat in a quarter second), so the cyclic GC has little to walk.
        self._groups: dict[_Group, list[object]] = {}

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
        found = self._groups.get(group)
        if found is None:
            self._groups[group] = [ts, images, saved_micros, 1, request_id]
        else:
            found[1] += images  # type: ignore[operator]
            found[2] += saved_micros  # type: ignore[operator]
            found[3] += 1  # type: ignore[operator]

    def take(self) -> list[tuple[object, ...]]:
        """The counted rows as `row_values` tuples (`proxy.stores.ledger`); empties the tally."""
        groups, self._groups = self._groups, {}
        return [
            (ts, key_name, team, request_key, model, provider, images, 0, saved, cache, rid, n)
            for (key_name, team, request_key, model, provider, cache), (
                ts,
                images,
                saved,
                n,
                rid,
            ) in groups.items()
        ]
