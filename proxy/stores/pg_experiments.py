"""`ExperimentStore` on PostgreSQL: A/B experiments, their image copies (bytea), sticky
assignments and conversions, shared by every replica.

A subject's first impression wins (`ON CONFLICT DO NOTHING` on (experiment, subject)), so
two replicas drawing different variants for one subject at once still agree on one.
Creating and deleting experiments take one transaction-scoped advisory lock: a delete
decides which image copies no experiment shows any more while no create adds a reference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from policies.abtest import Counts
from proxy.stores.experiments import Conversion, Experiment, ImageVariant, Impression
from proxy.stores.pg_database import PgDatabase

__all__ = ["PgExperimentStore"]

_IMAGES_LOCK: Final = 0x1A6E_6A7E_0002  # advisory lock: the set of experiments' images
_SHOWN: Final = "SELECT variant FROM experiment_impressions WHERE experiment = $1 AND subject = $2"
_UNSHOWN_IMAGES: Final = (
    "DELETE FROM experiment_images AS i WHERE NOT EXISTS (SELECT 1 FROM experiments AS e, "
    "jsonb_array_elements(e.variants) AS v WHERE v->>'image' = i.sha256)"
)
_TALLY: Final = (
    "SELECT variant, COUNT(*) FILTER (WHERE kind = 'i'), COUNT(*) FILTER (WHERE kind = 'c') "
    "FROM (SELECT variant, 'i' AS kind FROM experiment_impressions WHERE experiment = $1 "
    "UNION ALL SELECT variant, 'c' FROM experiment_conversions WHERE experiment = $1) AS e "
    "GROUP BY variant"
)


def _experiment(name: str, created: float, variants: str) -> Experiment:
    found = tuple(ImageVariant.from_json(raw) for raw in json.loads(variants))
    return Experiment(name, created, found)


class PgExperimentStore:
    """`PgExperimentStore(db)`, `db` a migrated `PgDatabase`."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def create(self, experiment: Experiment, images: Mapping[str, bytes]) -> bool:
        variants = json.dumps([v.to_json() for v in experiment.variants])
        formats = {v.image: v.format for v in experiment.variants}
        async with self._db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _IMAGES_LOCK)
            made = await conn.fetchval(
                "INSERT INTO experiments VALUES ($1, $2, $3::jsonb) "
                "ON CONFLICT (name) DO NOTHING RETURNING true",
                experiment.name,
                experiment.created,
                variants,
            )
            if made:
                await conn.executemany(
                    "INSERT INTO experiment_images VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    [(sha, formats[sha], bytes(data)) for sha, data in images.items()],
                )
        return bool(made)

    async def get(self, name: str) -> Experiment | None:
        sql = "SELECT name, created, variants::text FROM experiments WHERE name = $1"
        async with self._db.connection() as conn:
            found = await conn.fetchrow(sql, name)
        return None if found is None else _experiment(*found)

    async def experiments(self) -> list[Experiment]:
        """Every experiment, oldest first (then by name), as the port says."""
        sql = "SELECT name, created, variants::text FROM experiments ORDER BY created, name"
        async with self._db.connection() as conn:
            found = await conn.fetch(sql)
        return [_experiment(*row) for row in found]

    async def delete(self, name: str) -> bool:
        async with self._db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _IMAGES_LOCK)
            gone = await conn.execute("DELETE FROM experiments WHERE name = $1", name)
            await conn.execute("DELETE FROM experiment_impressions WHERE experiment = $1", name)
            await conn.execute("DELETE FROM experiment_conversions WHERE experiment = $1", name)
            await conn.execute(_UNSHOWN_IMAGES)
        return str(gone) == "DELETE 1"

    async def image(self, sha256: str) -> bytes | None:
        sql = "SELECT data FROM experiment_images WHERE sha256 = $1"
        async with self._db.connection() as conn:
            found = await conn.fetchval(sql, sha256)
        return None if found is None else bytes(found)

    async def seen(self, experiment: str, subject: str) -> str | None:
        async with self._db.connection() as conn:
            found = await conn.fetchval(_SHOWN, experiment, subject)
        return None if found is None else str(found)

    async def impress(self, experiment: str, subject: str, variant: str, ts: float) -> Impression:
        async with self._db.connection() as conn:
            made = await conn.fetchval(
                "INSERT INTO experiment_impressions VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING RETURNING variant",
                experiment,
                subject,
                variant,
                ts,
            )
            if made is not None:
                return Impression(str(made), True)
            return Impression(str(await conn.fetchval(_SHOWN, experiment, subject)), False)

    async def convert(self, experiment: str, subject: str, ts: float) -> Conversion:
        async with self._db.connection() as conn:
            shown = await conn.fetchval(_SHOWN, experiment, subject)
            if shown is None:
                return Conversion(None, False)
            made = await conn.fetchval(
                "INSERT INTO experiment_conversions VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING RETURNING true",
                experiment,
                subject,
                shown,
                ts,
            )
        return Conversion(str(shown), made is not None)

    async def counts(self, experiment: str) -> dict[str, Counts]:
        async with self._db.connection() as conn:
            found = await conn.fetch(_TALLY, experiment)
        return {str(v): Counts(int(i), int(c)) for v, i, c in found}
