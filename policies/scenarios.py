"""Typical monthly cost scenarios priced on a catalog, and spend projected to a month.

Each representative model is priced the way the gateway quotes a request before calling it
(`policies.pricing.quote`, through the router, so `auto` is the cheapest model that can serve
and a retired name is priced on its successor): one 1024x1024 image with a representative
prompt, times the images a month of each scenario. Money stays in integer micro-USD.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from fractions import Fraction

from policies.catalog import Catalog
from policies.errors import GatewayError
from policies.normalize import parse_generation
from policies.routing import RoutePolicy, plan_route

__all__ = [
    "REPRESENTATIVE",
    "SCENARIOS",
    "Pick",
    "PricedPick",
    "Scenario",
    "price_scenarios",
    "project_monthly",
]

# A typical production prompt (the README's A/B example), whose length token-priced models
# (GPT image) charge for on top of the image.
REPRESENTATIVE_PROMPT = (
    "Landing page hero image for AI productivity app, minimalist design, blue gradient"
)
_SECONDS_PER_DAY = 86_400
_DAYS_PER_MONTH = 30


@dataclass(frozen=True, slots=True)
class Scenario:
    """A typical month of image generation: who, how many images, what it usually costs."""

    name: str
    images_per_month: int
    typical_cost: str  # what such a month usually costs elsewhere, for comparison


@dataclass(frozen=True, slots=True)
class Pick:
    """A representative way to buy images: a model (or `auto`) at a quality and size."""

    model: str
    quality: str | None = None
    size: str = "1024x1024"

    @property
    def label(self) -> str:
        return self.model if self.quality is None else f"{self.model} ({self.quality})"


@dataclass(frozen=True, slots=True)
class PricedPick:
    pick: Pick
    served_by: str | None  # the model that would make the images; None: none can
    per_image_micros: int | None
    monthly_micros: tuple[int | None, ...]  # one per scenario, in the order given
    note: str = ""  # why it has no price


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("Hobbyist", 100, "$0-10"),
    Scenario("Content creator", 500, "$30-50"),
    Scenario("Agency", 2000, "$100-200"),
    Scenario("Enterprise", 10000, "$200-500"),
)

REPRESENTATIVE: tuple[Pick, ...] = (
    Pick("auto"),
    Pick("flux-schnell"),
    Pick("gpt-image-1-mini", "low"),
    Pick("gpt-image-1.5", "medium"),
    Pick("flux-1.1-pro"),
    Pick("ideogram-v2"),
)


def price_scenarios(
    catalog: Catalog,
    picks: Sequence[Pick] = REPRESENTATIVE,
    scenarios: Sequence[Scenario] = SCENARIOS,
    *,
    served: Collection[str] | None = None,
    prompt: str = REPRESENTATIVE_PROMPT,
) -> tuple[PricedPick, ...]:
    """Each pick's price per image and per month for each scenario.

    `served`: the model names a gateway lists (GET /v1/models); picks it does not list, and
    models it does not list as routes for `auto`, are left out. None: the whole catalog."""
    providers = frozenset(spec.provider for spec in catalog.models.values() if spec.provider)
    policy = RoutePolicy(providers=providers)
    priced: list[PricedPick] = []
    for pick in picks:
        served_by, micros, note = _price_one(catalog, policy, pick, prompt, served)
        monthly = tuple(None if micros is None else micros * s.images_per_month for s in scenarios)
        priced.append(PricedPick(pick, served_by, micros, monthly, note))
    return tuple(priced)


def _price_one(
    catalog: Catalog,
    policy: RoutePolicy,
    pick: Pick,
    prompt: str,
    served: Collection[str] | None,
) -> tuple[str | None, int | None, str]:
    if served is not None and pick.model not in served:
        return None, None, "not listed by the gateway"
    body: dict[str, object] = {"model": pick.model, "prompt": prompt, "size": pick.size}
    if pick.quality is not None:
        body["quality"] = pick.quality
    try:
        request = parse_generation(body, catalog, default_model=pick.model).request
        candidates = plan_route(request, catalog, policy, images=1)
    except GatewayError as exc:
        return None, None, exc.message
    usable = [c for c in candidates if served is None or c.spec.name in served]
    if not usable:
        return None, None, "no model the gateway lists can serve it"
    best = usable[0]
    return best.spec.name, best.quote_micros, ""


def project_monthly(spend_micros: int, window_seconds: float) -> int:
    """Micro-USD a month (30 days) at the rate of `spend_micros` over `window_seconds`,
    rounded half up to the micro-dollar. A window shorter than a minute projects nothing."""
    if spend_micros < 0:
        raise ValueError("spend cannot be negative")
    if window_seconds < 60:
        return 0
    rate = Fraction(spend_micros) * _SECONDS_PER_DAY * _DAYS_PER_MONTH / Fraction(window_seconds)
    return math.floor(rate + Fraction(1, 2))
