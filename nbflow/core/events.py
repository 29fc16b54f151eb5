"""The typed event stream of a run.

Everything that happens in a run is one of these small records, delivered in order, on the
run's event loop thread, to every subscriber (the Run's own log, and later the journal, the
live widget, metrics and the dashboard).  Subscribers only listen: nothing they do decides
what runs.  They must be quick; one that raises is removed with a warning rather than
breaking the run.

``time`` is wall-clock epoch seconds (``time.time()``); durations are measured with a
monotonic clock.

Each task event class declares, as ``state``, the task state it means (``TaskStarted`` means
``running``, ...; ``None`` for events that change no state), so listeners need no mapping of
their own.  Events carry what listeners need (the cache key, the reason a task ran or hit
the cache, the stored result's id, the attempt), so no listener reads a run's internals.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from itertools import repeat, starmap
from typing import Any, ClassVar

from . import states

log = logging.getLogger("nbflow")


@dataclass(slots=True)
class Event:
    time: float
    state: ClassVar[str | None] = None  # the task state this event means, if any


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
    error: str | None = None  # an error of the run itself (not of a task), as text


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
    refs: list[Any] = field(default_factory=list)  # the new nodes (nbflow.core.ref.Ref)
    parent_index: int | None = None


@dataclass(slots=True)
class TaskEvent(Event):
    index: int
    key: str


@dataclass(slots=True)
class TaskReady(TaskEvent):
    state: ClassVar[str | None] = states.READY


@dataclass(slots=True)
class TaskStarted(TaskEvent):
    """``attempt`` 0 with executor ``"cache"`` is a cache hit being served."""

    state: ClassVar[str | None] = states.RUNNING
    attempt: int
    executor: str


@dataclass(slots=True)
class TaskRetrying(TaskEvent):
    state: ClassVar[str | None] = states.RETRYING
    attempt: int
    delay_s: float
    error: BaseException
    reason: str | None = None  # why the task ran rather than hit the cache
    metrics: tuple[Any, ...] | None = None  # as in TaskCompleted, for the failed attempt
    output: str | None = None  # what the attempt printed
    started: float | None = None  # as in TaskCompleted: where the failed attempt ran


@dataclass(slots=True)
class TaskCompleted(TaskEvent):
    state: ClassVar[str | None] = states.COMPLETED
    attempt: int
    duration_s: float
    output_bytes: int | None
    cached: bool = False
    reason: str | None = None  # why it ran or hit the cache ("cache off" without a cache)
    cache_key: str | None = None  # the key its result is stored under, if stored
    blob: str | None = None  # the stored result's id (its checksum), if stored
    metrics: tuple[Any, ...] | None = None  # (cpu_s, peak_rss, input_bytes, input_items, input_shape)
    output: str | None = None  # what the attempt printed (thread and async tasks)
    # When the attempt started where it ran, known only now (a Dask task: its worker's
    # start, while ``time`` is its worker's stop); None: when TaskStarted said.
    started: float | None = None


@dataclass(slots=True)
class TaskFailed(TaskEvent):
    state: ClassVar[str | None] = states.FAILED
    attempt: int
    duration_s: float
    error: BaseException
    reason: str | None = None  # why the task ran rather than hit the cache
    metrics: tuple[Any, ...] | None = None  # as in TaskCompleted, for the failed attempt
    output: str | None = None  # what the attempt printed
    # As in TaskCompleted: when the failed attempt started where it ran (a Dask worker,
    # whose stop is then ``time``); None: when TaskStarted said.
    started: float | None = None


@dataclass(slots=True)
class ApprovalRequested(TaskEvent):
    """A human decision is awaited: answer with ``run.approve(key, True | False)``."""

    prompt: str
    timeout: float | None
    on_timeout: str


@dataclass(slots=True)
class TaskSkipped(TaskEvent):
    state: ClassVar[str | None] = states.SKIPPED
    reason: str


@dataclass(slots=True)
class TaskCancelled(TaskEvent):
    state: ClassVar[str | None] = states.CANCELLED
    attempt: int = 0  # the attempt that was running (0: it never started)
    # When the cancelled attempt started where it ran, as its backend told (a Dask
    # worker, whose stop is then ``time``); NaN: its backend cannot tell that it started
    # there (a Dask task the cluster had not reported: TaskStarted was when it was sent),
    # so it has no start; None: when TaskStarted said.
    started: float | None = None


@dataclass(slots=True)
class TaskBatch(Event):
    """Many task events of one class at once: the items of a batched map's chunk that
    became ready, started or completed together (:mod:`nbflow.engine.batching`).

    It stands for the events ``kind(time, indexes[k], keys[k], ...)``, one per item, in
    order; :meth:`expand` makes them.  A field of ``kind`` named in ``columns`` has one value
    per item, one named in ``common`` the same value for every item.  Only subscribers that
    say they read batches (``accepts_batches = True`` on the callable) ever receive one, and
    only when every subscriber of the run does (:attr:`EventStream.batches`): otherwise the
    run delivers the per-item events as before.  ``state`` is None: the state is
    ``kind.state``, and a listener must look at every item.
    """

    kind: type[TaskEvent]
    indexes: list[int]
    keys: list[str]
    columns: dict[str, list[Any]] = field(default_factory=dict)
    common: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indexes)

    def expand(self) -> list[TaskEvent]:
        """The per-item events this batch stands for, in order (made anew on each call)."""
        kind, t, columns, common = self.kind, self.time, self.columns, self.common
        # Positional, in the class's field order after (time, index, key): one column or
        # one repeated value per field, zipped (no keyword dict per item).
        cols: list[Any] = []
        for f in fields(kind)[3:]:
            if f.name in columns:
                cols.append(columns[f.name])
            elif f.name in common:
                cols.append(repeat(common[f.name]))
            elif f.default is not MISSING:
                cols.append(repeat(f.default))
            else:
                cols.append(repeat(f.default_factory()))  # type: ignore[operator]
        rows = zip(repeat(t), self.indexes, self.keys, *cols, strict=False)  # (repeat() never ends)
        return list(starmap(kind, rows))

    def column(self, name: str) -> list[Any]:
        """Field ``name`` of every item (one value per item, whether per item or common)."""
        if name in self.columns:
            return self.columns[name]
        if name in self.common:
            return [self.common[name]] * len(self.indexes)
        default = {f.name: f.default for f in fields(self.kind)}.get(name)
        return [default] * len(self.indexes)


def flatten(events: list[Event]) -> Iterator[Event]:
    """``events`` with every :class:`TaskBatch` replaced by the per-item events it stands for."""
    for e in events:
        if type(e) is TaskBatch:
            yield from e.expand()
        else:
            yield e


class EventLog:
    """A run's own record of its events (``run.events``): a subscriber that reads batches.

    A :class:`TaskBatch` is kept as it came (one object for a chunk's items); :meth:`events`
    gives the per-item list, expanding batches when it is read, once: what a run's
    ``events`` always held.
    """

    accepts_batches = True

    __slots__ = ("_flat", "_lock", "_read", "raw")

    def __init__(self) -> None:
        self.raw: list[Event] = []  # as delivered (batches included)
        self._flat: list[Event] = []  # per-item, up to raw[:_read]
        self._read = 0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        self.raw.append(event)

    def events(self) -> list[Event]:
        """Every event so far, one per task change (a batch expanded in its place)."""
        with self._lock:  # (read from any thread while the run's loop appends)
            raw, end = self.raw, len(self.raw)
            if self._read < end:
                self._flat.extend(flatten(raw[self._read:end]))
                self._read = end
            return self._flat


Subscriber = Callable[[Event], Any]


class EventStream:
    """Fan-out of events to subscribers, in subscription order."""

    __slots__ = ("batches", "subscribers")

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self.subscribers: list[Subscriber] = list(subscribers or ())
        #: Every subscriber reads :class:`TaskBatch` events (so a chunk's items may be
        #: announced in one); kept up to date by subscribe/unsubscribe.
        self.batches = self._all_read_batches()

    def _all_read_batches(self) -> bool:
        return all(getattr(fn, "accepts_batches", False) for fn in self.subscribers)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn``; returns a function that removes it again."""
        self.subscribers.append(fn)
        self.batches = self._all_read_batches()

        def unsubscribe() -> None:
            if fn in self.subscribers:
                self.subscribers.remove(fn)
                self.batches = self._all_read_batches()

        return unsubscribe

    def close(self, keep: Subscriber | None = None) -> None:
        """The run has ended (no event follows): drop every subscriber but ``keep``.

        A subscriber that serves a live run (journal, views) refers to the run; dropping it
        here keeps run and subscribers from being a cycle after the run."""
        self.subscribers = [fn for fn in self.subscribers if fn is keep]
        self.batches = self._all_read_batches()

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
            self.batches = self._all_read_batches()


_global_subscribers: list[Callable[[Any], Subscriber | None]] = []


def on_run(factory: Callable[[Any], Subscriber | None]) -> Callable[[], None]:
    """Register ``factory(run)``, called as each run starts; it returns a subscriber (or None).

    This is how rooms that outlive a single run (the journal, the dashboard feed) attach.
    Returns a function that unregisters the factory.
    """
    _global_subscribers.append(factory)
    return lambda: _global_subscribers.remove(factory) if factory in _global_subscribers else None
