"""The typed event stream of a run.

Everything that happens in a run is one of these small records, delivered in order, on the
run's event loop thread, to every subscriber (the Run's own log, and later the journal, the
live widget, metrics and the dashboard).  Subscribers only listen: nothing they do decides
what runs.  They must be quick; one that raises is removed with a warning rather than
breaking the run.

``time`` is wall-clock epoch seconds (``time.time()``); durations are measured with a
monotonic clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("nbflow")


@dataclass(slots=True)
class Event:
    time: float


@dataclass(slots=True)
class RunStarted(Event):
    run_id: str
    name: str
    tasks: int
    backend: str
    workers: int | None


@dataclass(slots=True)
class RunFinished(Event):
    run_id: str
    status: str  # "completed" | "failed" | "cancelled"
    duration_s: float


@dataclass(slots=True)
class RunPaused(Event):
    run_id: str


@dataclass(slots=True)
class RunResumed(Event):
    run_id: str


@dataclass(slots=True)
class TasksAdded(Event):
    """The graph grew while running (a ``map`` over a Ref expanded); ``keys`` are new."""

    parent: str
    keys: list[str]
    indexes: list[int]


@dataclass(slots=True)
class TaskEvent(Event):
    index: int
    key: str


@dataclass(slots=True)
class TaskReady(TaskEvent):
    pass


@dataclass(slots=True)
class TaskStarted(TaskEvent):
    attempt: int
    executor: str


@dataclass(slots=True)
class TaskRetrying(TaskEvent):
    attempt: int
    delay_s: float
    error: BaseException


@dataclass(slots=True)
class TaskCompleted(TaskEvent):
    attempt: int
    duration_s: float
    output_bytes: int | None
    cached: bool = False


@dataclass(slots=True)
class TaskFailed(TaskEvent):
    attempt: int
    duration_s: float
    error: BaseException


@dataclass(slots=True)
class ApprovalRequested(TaskEvent):
    """A human decision is awaited: answer with ``run.approve(key, True | False)``."""

    prompt: str
    timeout: float | None
    on_timeout: str


@dataclass(slots=True)
class TaskSkipped(TaskEvent):
    reason: str


@dataclass(slots=True)
class TaskCancelled(TaskEvent):
    pass


Subscriber = Callable[[Event], Any]


class EventStream:
    """Fan-out of events to subscribers, in subscription order."""

    __slots__ = ("subscribers",)

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self.subscribers: list[Subscriber] = list(subscribers or ())

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn``; returns a function that removes it again."""
        self.subscribers.append(fn)
        return lambda: self.subscribers.remove(fn) if fn in self.subscribers else None

    def emit(self, event: Event) -> None:
        broken = None
        for fn in self.subscribers:
            try:
                fn(event)
            except Exception:  # a broken listener must not break the run
                log.warning("nbflow: event subscriber %r raised; removing it", fn, exc_info=True)
                broken = [*(broken or ()), fn]
        if broken:
            for fn in broken:
                self.subscribers.remove(fn)


_global_subscribers: list[Callable[[Any], Subscriber | None]] = []


def on_run(factory: Callable[[Any], Subscriber | None]) -> Callable[[], None]:
    """Register ``factory(run)``, called as each run starts; it returns a subscriber (or None).

    This is how rooms that outlive a single run (the journal, the dashboard feed) attach.
    Returns a function that unregisters the factory.
    """
    _global_subscribers.append(factory)
    return lambda: _global_subscribers.remove(factory) if factory in _global_subscribers else None
