"""A task result that stays where it was computed (on a Dask worker) until someone needs it.

A backend that moves data (Dask) may return a :class:`Remote` instead of the value.  The
scheduler keeps it in the run's results like any other value and hands it, untouched, to
the next task that runs on the same backend, which passes the underlying handle to the
cluster so that the data moves worker to worker.  The value comes to this process only
when something here needs it:

* a person asks (``run[ref]``, ``ref.result()``, a ``%%workflow`` binding);
* a task on another backend (thread, async, process) takes it as an argument;
* a construct decides on it (a branch condition, a loop's ``until``, a ``map`` over it).

Each of those calls :func:`local`, which fetches once and remembers the value.  The cache
does not fetch: the task itself hashes (and, when the store's disk is reachable from the
worker, writes) its value where it ran and sends the facts back with its result
(:attr:`Remote.prepared`); otherwise the cache asks the result's worker to do so, with
:meth:`Remote.on_worker`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

_MISSING = object()


class Remote(abc.ABC):
    """Base of remote results; a backend subclass implements ``_fetch`` and ``on_worker``
    (and ``shares_disk`` when its workers can see this machine's disk)."""

    __slots__ = ("_value", "compute_s", "key", "nbytes", "prepared", "ran", "worker", "worker_metrics")

    def __init__(self, key: str, nbytes: int | None, worker: str | None) -> None:
        self.key = key  # the task key of the node that produced it
        self.nbytes = nbytes  # size on the worker, as the cluster measured it
        self.worker = worker  # where it lives (None: unknown)
        # What the cache asked the task itself to do with the value on its worker, as it
        # came back with the result (its content hash, and the stored blob when the worker
        # wrote it), so the cache need not ask the worker again; None: nothing was done.
        self.prepared: tuple[Any, ...] | None = None
        # (CPU seconds, peak RSS in bytes) of the call that made it, as its worker measured
        # them, when they came with its completion; None: not measured.
        self.worker_metrics: tuple[float, int | None] | None = None
        # Seconds the call computed on its worker, as the worker timed it; None: not told.
        # (The engine's own clock around the call also counts the wait for a worker and for
        # the news of the end, which arrives in bursts: history needs the call's own time.)
        self.compute_s: float | None = None
        # When the call started and stopped on its worker, in this process's clock (epoch
        # seconds), as told with its completion; None: not told.  The engine records these
        # as the task's start and end: it learns of a start only when it adopts the call,
        # and of an end when the news arrives, either of which can be far from when it ran.
        self.ran: tuple[float, float] | None = None
        self._value: Any = _MISSING

    @property
    def fetched(self) -> bool:
        """Has the value come to this process already?"""
        return self._value is not _MISSING

    def fetch(self) -> Any:
        """The value, brought here once (blocking; call off the event loop when large)."""
        if self._value is _MISSING:
            self._value = self._fetch()
        return self._value

    @abc.abstractmethod
    def _fetch(self) -> Any:
        """Bring the value here (called once, by :meth:`fetch`)."""

    @abc.abstractmethod
    def on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(value, *args)`` where the value lives and return its (small) result."""

    def shares_disk(self, path: str) -> bool:
        """Can the worker holding the value see ``path`` (a directory of this machine)?"""
        return False

    def __repr__(self) -> str:
        where = self.worker or "?"
        size = "?" if self.nbytes is None else f"{self.nbytes} B"
        return f"<remote result of {self.key} on {where}, {size}>"


def local(value: Any) -> Any:
    """``value`` itself, or the fetched value when it is a :class:`Remote`."""
    return value.fetch() if isinstance(value, Remote) else value


def has_remote(obj: Any) -> bool:
    """Does ``obj`` (an argument: maybe a list/tuple/dict/set of them) hold a Remote?"""
    t = type(obj)
    if isinstance(obj, Remote):
        return True
    if t is list or t is tuple or t is set or t is frozenset:
        return any(has_remote(x) for x in obj)
    if t is dict:
        return any(has_remote(x) for x in obj.values())
    return False


def remotes_in(obj: Any, out: list[Remote] | None = None) -> list[Remote]:
    """The :class:`Remote` results inside ``obj`` (an argument: containers too), in order."""
    out = [] if out is None else out
    t = type(obj)
    if isinstance(obj, Remote):
        out.append(obj)
    elif t is list or t is tuple or t is set or t is frozenset:
        for x in obj:
            remotes_in(x, out)
    elif t is dict:
        for x in obj.values():
            remotes_in(x, out)
    return out


def localise(obj: Any) -> Any:
    """``obj`` with every :class:`Remote` inside it (containers too) fetched."""
    t = type(obj)
    if isinstance(obj, Remote):
        return obj.fetch()
    if t is list:
        return [localise(x) for x in obj]
    if t is tuple:
        return tuple([localise(x) for x in obj])
    if t is dict:
        return {k: localise(v) for k, v in obj.items()}
    if t is set or t is frozenset:
        return t(localise(x) for x in obj)
    return obj
