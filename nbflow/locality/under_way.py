"""Dask runs on their way to their first result, which a deferred end-of-run read lets go first.

A Dask run whose client stays open reads the workers' transfer logs and memory evidence
after the caller has its results, in a thread of its own
(:meth:`.agent.LocalityAgent.closing`).  When runs follow each other at once (a loop of
``wf.run()``, an ``nf.loop``, a papermill batch), the next run is being prepared and its
graph sent to Dask by then: the read's round trips to every worker and the scheduler are
handled by this process's Dask client loop and, on a ``LocalCluster``, the scheduler's
thread, and would share the GIL with everything the next run does before its graph reaches
Dask, which is the whole of its start (``benchmarks/back_to_back.py``).  Once its graph is
there, the process mostly waits for the workers, and the read's CPU is spent while the run
computes (it brings the graph to Dask ~4 ms sooner on *fan*; a shorter run was not
resolvable under load: ``benchmarks/RESULTS.md``, Session 12 (A2)).

So a Dask run's preparation counts it as *under way* (:func:`preparing`) until the first
of its tasks ends (its graph has reached Dask by then), or the run ends or pauses, or its
preparation fails, or its object is dropped unstarted; an end-of-run read waits
(:func:`wait_quiet`) until no run is under way, at most a bound (a run whose tasks are
long), or until something needs its outcome.  Waiting changes when the read happens, never
what it reads: the logs and the memory evidence are the workers' records, kept until read.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from ..core import events as ev
from ..core.states import TERMINAL

__all__ = ["Way", "begun", "preparing", "under_way", "wait_quiet", "wake"]

_cond = threading.Condition()
_open: set[Way] = set()  # the runs under way in this process (their ways)


class Way:
    """One run under way: a subscriber to its events that ends the way at the first task
    that ends, or at the run's end (see the module)."""

    accepts_batches = True  # (reads TaskBatch events: a batched map's chunk stays batched)
    __slots__ = ("__weakref__", "over")

    def __init__(self) -> None:
        self.over = False
        with _cond:
            _open.add(self)

    def __call__(self, event: ev.Event) -> None:
        if self.over:
            return
        state = event.kind.state if isinstance(event, ev.TaskBatch) else event.state
        if state in TERMINAL or isinstance(event, (ev.RunFinished, ev.RunPaused)):
            self.end()

    def end(self) -> None:
        """The run is no longer under way (once)."""
        with _cond:
            if self.over:
                return
            self.over = True
            _open.discard(self)
            _cond.notify_all()


def begun(run: Any) -> Way:
    """``run`` (an engine Run being prepared) is under way: it ends the way itself (its
    events), or as it is dropped; call :meth:`Way.end` if its preparation fails."""
    way = Way()
    run.subscribe(way)
    weakref.finalize(run, way.end)  # (a run prepared and never started)
    return way


@contextlib.contextmanager
def preparing(run: Any) -> Iterator[None]:
    """Around a run's preparation: a Dask run is under way from here (:func:`begun`), and no
    longer if its preparation fails (it will not start; a traceback may hold it long)."""
    way = begun(run) if "dask" in run.backends else None
    try:
        yield
    except BaseException:
        if way is not None:
            way.end()
        raise


def under_way() -> int:
    """How many runs are under way in this process now."""
    return len(_open)


def wait_quiet(timeout: float, now: threading.Event | None = None) -> bool:
    """Wait until no run is under way, ``now`` is set (whoever sets it calls :func:`wake`
    then), or ``timeout`` seconds passed; True if no run is under way then."""
    end = time.monotonic() + timeout
    with _cond:
        while _open and not (now is not None and now.is_set()):
            left = end - time.monotonic()
            if left <= 0:
                return False
            _cond.wait(left)
        return not _open


def wake() -> None:
    """Wake every :func:`wait_quiet` to look at its ``now`` again."""
    with _cond:
        _cond.notify_all()
