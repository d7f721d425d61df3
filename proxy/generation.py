"""One miss, made: route, call (fanned out by what a model makes per call), check, fall back.

The router orders the models that can serve the request; each is tried in turn until one
succeeds or a failure is not worth retrying elsewhere (the request itself was refused).
Every try is an event (`ProviderCalled`, with its outcome), every fallback too (`FellBack`),
and a bill beyond the quote (`OverQuoted`): the app's hooks count and log them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from policies.budget import cap_charge
from policies.errors import GatewayError, NoRoute, ProviderError
from policies.pricing import settle
from policies.routing import Candidate
from policies.sizes import parse_size
from proxy.observability.events import Events, FellBack, OverQuoted, ProviderCalled
from proxy.output import Finished, finish_image
from proxy.ports import Provider, ProviderCall, ProviderResult
from proxy.router import Router
from proxy.upstream_limits import LOCAL_LIMIT_CODE, UpstreamLimiter

__all__ = ["Budget", "Generated", "Generator", "MadeImage"]


@dataclass(frozen=True, slots=True)
class MadeImage:
    image: Finished
    revised_prompt: str | None


@dataclass(frozen=True, slots=True)
class Generated:
    images: tuple[MadeImage, ...]
    model: str
    provider: str
    cost_micros: int  # charged: what the upstream reported, at most the quote reserved
    attempts: int
    prompt: str | None  # the prompt that went upstream (a retired model's style included)
    quote_micros: int = 0
    over_quote_micros: int = 0  # reported beyond the quote: never charged to a budget


class Budget(Protocol):
    """Reserve a quote on every budget that applies (raises BudgetExceeded), release it (the
    call failed), or abandon it (the call was cut off in flight: charged as an orphan).
    `model` and `provider` say what the reservation is for, should its process die."""

    async def reserve(self, amount_micros: int, model: str, provider: str) -> str | None: ...

    async def release(self, reservation: str | None) -> None: ...

    async def abandon(self, reservation: str | None) -> None: ...


@dataclass
class Generator:
    router: Router
    events: Events
    max_attempts: int = 3
    limiter: UpstreamLimiter = field(default_factory=lambda: UpstreamLimiter({}))

    async def make(
        self,
        candidates: Sequence[Candidate],
        indexes: tuple[int, ...],
        uploads: Mapping[str, bytes],
        budget: Budget,
    ) -> tuple[Generated, str | None]:
        """The images and the reservation that paid for them (the caller settles it).

        Each attempt reserves its own model's quote before the call and releases it when the
        call fails, so a fallback to a dearer model is admitted only if it fits too."""
        last: ProviderError | None = None
        tried = candidates[: self.max_attempts]
        for attempt, candidate in enumerate(tried, start=1):
            spec = candidate.spec
            if attempt > 1:
                self.events.emit(FellBack(tried[attempt - 2].spec.name, spec.name, spec.provider))
            reservation = await budget.reserve(candidate.quote_micros, spec.name, spec.provider)
            try:
                return await self._try(candidate, indexes, uploads, attempt), reservation
            except asyncio.CancelledError:
                await budget.abandon(reservation)  # the call may have been billed upstream
                raise
            except BaseException as exc:
                await budget.release(reservation)
                if not isinstance(exc, ProviderError):
                    raise
                last = exc
            if last.code != LOCAL_LIMIT_CODE:  # our own limit is no sign of ill health
                self.router.record(candidate.spec.name, ok=False, retry_after=last.retry_after)
            if not last.retryable:
                raise last
        if last is None:
            raise NoRoute("No model could be tried for this request.")
        if len(tried) > 1:
            raise type(last)(
                f"Every model tried failed ({len(tried)} attempts); the last said: {last.message}",
                code=last.code,
                retry_after=last.retry_after,
            )
        raise last

    async def _try(
        self,
        candidate: Candidate,
        indexes: tuple[int, ...],
        uploads: Mapping[str, bytes],
        attempt: int,
    ) -> Generated:
        spec = candidate.spec
        provider = self.router.registry.get(spec.provider)
        per_call = max(1, spec.max_per_call)
        chunks = [indexes[i : i + per_call] for i in range(0, len(indexes), per_call)]
        await self.limiter.acquire(provider.name, len(chunks))
        started = time.perf_counter()
        try:
            results = await asyncio.gather(
                *(self._call(provider, candidate, chunk, uploads) for chunk in chunks)
            )
            made = await asyncio.to_thread(_finish_all, candidate, results)
        except GatewayError as exc:
            self.events.emit(
                ProviderCalled(
                    provider.name,
                    spec.name,
                    exc.code or "error",
                    time.perf_counter() - started,
                    attempt,
                    error=exc.message,
                )
            )
            if not isinstance(exc, ProviderError):
                raise ProviderError(exc.message, code=exc.code) from exc
            raise
        seconds = time.perf_counter() - started
        reported = sum(
            _cost(candidate, chunk, result, made)
            for chunk, result in zip(chunks, results, strict=True)
        )
        charge = cap_charge(candidate.quote_micros, reported)
        self.events.emit(
            ProviderCalled(
                provider.name,
                spec.name,
                "ok",
                seconds,
                attempt,
                images=len(indexes),
                calls=len(chunks),
                cost_micros=charge.charged_micros,
            )
        )
        self.router.record(spec.name, ok=True)
        if charge.over_quote_micros:
            self.events.emit(OverQuoted(provider.name, spec.name, candidate.quote_micros, reported))
        return Generated(
            tuple(made),
            spec.name,
            provider.name,
            charge.charged_micros,
            attempt,
            candidate.request.prompt,
            candidate.quote_micros,
            charge.over_quote_micros,
        )

    async def _call(
        self,
        provider: Provider,
        candidate: Candidate,
        chunk: tuple[int, ...],
        uploads: Mapping[str, bytes],
    ) -> ProviderResult:
        call = ProviderCall(
            request=candidate.request, model=candidate.spec, indexes=chunk, uploads=uploads
        )
        result = await provider.generate(call)
        if len(result.images) != len(chunk):
            raise ProviderError(
                f"{provider.name} returned {len(result.images)} image(s) for {len(chunk)} asked",
                code="invalid_output",
            )
        return result


def _finish_all(candidate: Candidate, results: Sequence[ProviderResult]) -> list[MadeImage]:
    request = candidate.request
    upstream = parse_size(request.size)
    made: list[MadeImage] = []
    for result in results:
        for image in result.images:
            finished = finish_image(
                image.data,
                fmt=request.output_format,
                compression=request.output_compression,
                upstream_size=upstream,
                exact=candidate.exact_size,
                target=candidate.target_size,
            )
            made.append(MadeImage(finished, image.revised_prompt))
    return made


def _cost(
    candidate: Candidate, chunk: tuple[int, ...], result: ProviderResult, made: list[MadeImage]
) -> int:
    if result.cost_micros is not None:
        return result.cost_micros
    return settle(
        candidate.spec,
        candidate.request,
        len(chunk),
        usage=result.usage,
        gpu_seconds=result.gpu_seconds,
        output_size=made[0].image.source,
    )
