"""What happened, as frozen values: the logic emits events, hooks observe them.

The service, the generator, the router and the HTTP middleware never touch a metric or a
logger: they `emit` one of these values, and each hook (Prometheus metrics, structlog lines,
a list in tests) turns it into what it keeps. Hooks run inline and must not raise or await;
the speed-ups of the hot path (pre-bound metric children, batched log lines) live inside
them. Fields are bounded and safe to log: a request key is cut to 12 characters by the hook
that prints it, and no event carries a prompt or a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

__all__ = [
    "BackendCalled",
    "BackendFailed",
    "CacheLookedUp",
    "Charged",
    "CircuitChanged",
    "ClientDisconnected",
    "ClientTimedOut",
    "Denied",
    "ErrorAnswered",
    "Event",
    "Events",
    "ExperimentCreated",
    "ExperimentImageRestored",
    "FellBack",
    "Handlers",
    "Hook",
    "ListHook",
    "OverQuoted",
    "ProviderCalled",
    "RequestCompleted",
    "RequestFailed",
    "ReservationOrphaned",
    "Saved",
    "StoreFailed",
]

DenialReason = Literal["auth", "model", "prompt_policy", "rate_limit", "budget"]
Outcome = Literal["hit", "miss", "partial", "coalesced", "bypass"]


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """One HTTP request answered (the access log line and the request metrics)."""

    route: str  # the route template, never the raw path
    method: str
    status: int
    cache: str  # the X-Cache outcome in lower case, "none" when there is none
    seconds: float
    fields: dict[str, object] = field(default_factory=dict)  # key[:12], model, cost...
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class CacheLookedUp:
    """An image request's cache outcome, once per request."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class ProviderCalled:
    """One upstream attempt: `outcome` is "ok" or the error code."""

    provider: str
    model: str
    outcome: str
    seconds: float
    attempt: int = 1
    images: int = 0
    calls: int = 1
    cost_micros: int = 0
    error: str = ""  # the provider's message when it failed (never a secret)


@dataclass(frozen=True, slots=True)
class FellBack:
    """A request moved on from a model that failed to the next candidate."""

    from_model: str
    to_model: str
    provider: str  # the next candidate's provider


@dataclass(frozen=True, slots=True)
class Denied:
    """A request refused by policy."""

    reason: DenialReason


@dataclass(frozen=True, slots=True)
class Charged:
    """Money settled for a generation (a spend row)."""

    key_name: str | None
    team: str | None
    model: str
    cost_micros: int


@dataclass(frozen=True, slots=True)
class Saved:
    """What hits saved, per counted hit row (emitted when the rows are flushed)."""

    key_name: str | None
    team: str | None
    model: str
    saved_micros: int


@dataclass(frozen=True, slots=True)
class OverQuoted:
    """An upstream billed beyond the worst-case quote; the model is held."""

    provider: str
    model: str
    quote_micros: int
    reported_micros: int


@dataclass(frozen=True, slots=True)
class CircuitChanged:
    """A model's circuit: 0 closed, 0.5 half-open, 1 open (held or failing)."""

    model: str
    state: float


@dataclass(frozen=True, slots=True)
class ReservationOrphaned:
    """A reservation settled at its quote because its call was cut off or its owner died."""

    model: str
    key_name: str | None
    cost_micros: int = 0
    provider: str = ""
    request_id: str | None = None  # the request whose call was cut off, when known


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """Generated (and charged) images that could not be stored."""

    request_key: str
    model: str
    error: str


@dataclass(frozen=True, slots=True)
class BackendFailed:
    """A store or background duty failed (`what`: "ledger.flush", "ledger.sweep",
    "redis", "postgres", "s3"...); the gateway keeps running."""

    what: str
    error: str
    exception: BaseException | None = None  # its traceback goes into the log line


# -- what the HTTP edge and the connection guard see --


@dataclass(frozen=True, slots=True)
class ErrorAnswered:
    """A request answered with an error envelope (any status: hooks choose what to keep)."""

    status: int
    code: str | None
    error: str  # the message the client was sent


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """An unexpected exception inside a handler, answered as a 500 (a bug, or a store down)."""

    path: str  # cut to 100 characters
    exception: BaseException


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    """The client closed its connection before the answer (counted as status 499)."""

    path: str  # cut to 100 characters
    detail: str


@dataclass(frozen=True, slots=True)
class ClientTimedOut:
    """A connection closed by the guard: its headers (`phase="header"`) or its body
    (`phase="body"`, `received` bytes so far) stopped arriving for `seconds`."""

    phase: Literal["header", "body"]
    seconds: float
    received: int = 0


@dataclass(frozen=True, slots=True)
class ExperimentCreated:
    """An A/B experiment defined through the admin API."""

    experiment: str
    variants: int


@dataclass(frozen=True, slots=True)
class ExperimentImageRestored:
    """A variant's image the cache had lost, put back from the experiment's own copy."""

    image: str  # sha256; the hook prints 12 characters
    variant: str


@dataclass(frozen=True, slots=True)
class BackendCalled:
    """One call to a shared-mode backend ("redis", "postgres", "s3"): which port method
    (`operation`, e.g. "entries.get"), how long it took, and whether the backend answered
    (`ok` False: it could not be reached, `BackendUnavailable`)."""

    backend: str
    operation: str
    seconds: float
    ok: bool


Event = (
    RequestCompleted
    | CacheLookedUp
    | ProviderCalled
    | FellBack
    | Denied
    | Charged
    | Saved
    | OverQuoted
    | CircuitChanged
    | ReservationOrphaned
    | StoreFailed
    | BackendFailed
    | ErrorAnswered
    | RequestFailed
    | ClientDisconnected
    | ClientTimedOut
    | ExperimentCreated
    | ExperimentImageRestored
    | BackendCalled
)


class Hook(Protocol):
    """Observes events. Called inline on the event loop: cheap, never raises, never awaits."""

    def __call__(self, event: Event) -> None: ...


@runtime_checkable
class Handlers(Protocol):
    """A hook that says which kinds it keeps, one handler each (fixed once built): `Events`
    calls those directly and never calls the hook for other kinds."""

    def handlers(self) -> Mapping[type[Any], Callable[[Any], None]]: ...


class Events:
    """Emits each event to every hook, in order.

    The handlers for each kind are looked up once, the first time it is emitted: a hook with
    `handlers()` gets only its kinds, straight to the handler; any other hook gets every
    event. An emit then costs one dict lookup and one call per interested hook (measured:
    bench/events_micro.py)."""

    __slots__ = ("_route", "hooks")

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks: tuple[Hook, ...] = tuple(hooks)
        self._route: dict[type[Any], tuple[Callable[[Any], None], ...]] = {}

    def emit(self, event: Event) -> None:
        handlers = self._route.get(type(event))
        if handlers is None:
            handlers = self._route[type(event)] = self._handlers_of(type(event))
        for handle in handlers:
            handle(event)

    def _handlers_of(self, kind: type[Any]) -> tuple[Callable[[Any], None], ...]:
        found: list[Callable[[Any], None]] = []
        for hook in self.hooks:
            table = hook.handlers() if isinstance(hook, Handlers) else None
            if table is None:
                found.append(hook)
            elif (handle := table.get(kind)) is not None:
                found.append(handle)
        return tuple(found)


_E = TypeVar("_E")


class ListHook:
    """Keeps every event: what tests assert on."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[_E]) -> list[_E]:
        """The events of one kind, in the order they came."""
        return [event for event in self.events if isinstance(event, kind)]
