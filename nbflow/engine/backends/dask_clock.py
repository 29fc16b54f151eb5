"""A worker's clock read in this process's: when a Dask task ran, in the notebook's time.

Each task's call is timed on its worker with the worker's own wall clock
(``_apply_located``; the times travel with the completion, in the metadata Dask keeps of
the task, or in the worker's announcement).  This process may run on another machine,
whose clock differs from the worker's by more than a task lasts; on one machine the two
are the same clock.  (Dask's own start/stop records are shifted by each worker's estimate
of the *scheduler's* offset, made from heartbeat round trips: on a busy machine that
estimate is off by tens of milliseconds even when every process shares one clock, which
would put a task's end after the notebook learned of it.  They serve only when the
worker's own times did not come.)

Nothing here asks a worker for its time (a round trip per worker and run).  Per worker,
the offset (this process's time minus the worker's) is bounded by what the run sees anyway:

* **above** by ``received - stop`` of every completion: the news of a task's end cannot
  arrive here before the task ended;
* **below** by ``first submission - start`` of every task: no task of the run can start
  on a worker before the run submitted its first one.

The offset used is 0 while 0 lies between the bounds (the same clock, or clocks that
differ by less than the run can tell), else the bound nearest 0.  So a task's end is never
placed after the moment the run learned of it, nor its start before the run began
submitting.  When the bounds contradict each other, the upper bound wins: "not after the
run knew" is what the live view and the journal promise.

**A failed call is timed too.**  A task that raises sends no completion, so its worker notes
when the call began and ended on the exception itself (:func:`note_failure`), which travels
back pickled with its attributes; the backend reads the times in this process's clock
(:func:`took_failure`) and leaves them on the error for the engine
(:func:`nbflow.engine.taskstate.ran_of`), which records the failed attempt's start and end
as a successful one's: when it ran on its worker, not when the engine heard of it.

**So is a cancelled one.**  An attempt cancelled (the run cancelled, a task failing
without ``continue_on_error``) after the cluster told that it ran is recorded with its
worker's times, as if it had finished; one cancelled before the cluster told anything has
no start and no duration (it may never have left the scheduler's queue, and one still
running on its worker cannot be asked when it began without a round trip):
:func:`took_cancel`.
"""

from __future__ import annotations

import math
from typing import Any

from ..taskstate import RAN

WORKER_RAN = "_nbflow_worker_ran"  # on an error raised on a worker: (worker, began, ended)


class Clock:
    """The offsets from the workers' clocks to this process's, for one run (see the module)."""

    __slots__ = ("bounds", "first_sent")

    def __init__(self) -> None:
        self.first_sent: float | None = None  # this process's time of the run's first submission
        self.bounds: dict[str, list[float]] = {}  # worker -> [lower, upper] of its offset

    def submitting(self, now: float) -> None:
        """The run submits to the cluster at ``now`` (this process's time.time())."""
        if self.first_sent is None:
            self.first_sent = now

    def offset(self, worker: str) -> float:
        """Seconds to add to a time of ``worker``'s clock to read it in this process's."""
        lower, upper = self.bounds.get(worker, (-math.inf, math.inf))
        if upper < 0:  # (the worker's clock is ahead: what arrived here says so)
            return upper
        if lower > 0:
            return min(lower, upper)
        return 0.0

    def span(self, worker: str, start: float, stop: float, received: float) -> tuple[float, float]:
        """A task's ``start`` and ``stop`` on ``worker`` (its clock), whose completion
        arrived here at ``received``, in this process's clock."""
        b = self.bounds.get(worker)
        if b is None:
            b = self.bounds[worker] = [-math.inf, math.inf]
        if received - stop < b[1]:
            b[1] = received - stop
        if self.first_sent is not None and self.first_sent - start > b[0]:
            b[0] = self.first_sent - start
        off = self.offset(worker)
        return start + off, stop + off


def note_failure(error: BaseException, began: float, ended: float) -> None:
    """On a worker: the call that raised ``error`` began and ended then (its clock)."""
    try:
        from distributed import get_worker

        setattr(error, WORKER_RAN, (get_worker().address, began, ended))
    except Exception:  # (not on a worker; an exception that takes no attributes: unknown)
        pass


def took_cancel(cancel: BaseException, span: tuple[float, float] | None) -> None:
    """In this process: an attempt was cancelled (``cancel``, the cancellation raised in
    its call) after the cluster told that it ran from ``span[0]`` to ``span[1]`` (this
    process's clock), or with ``span`` None before it told anything: leave that on the
    cancellation for the engine (``taskstate.RAN``, NaNs for "not known to have started":
    :func:`nbflow.engine.taskstate.cancelled`).  The engine's own start of a Dask task
    is when it was sent, which says nothing of when, or whether, its worker ran it."""
    try:
        setattr(cancel, RAN, span if span is not None else (math.nan, math.nan))
    except Exception:  # (a cancellation that takes no attributes: the engine's times stand)
        pass


def took_failure(error: BaseException, clock: Clock, received: float) -> None:
    """In this process: ``error`` came back from a worker at ``received``; if its worker
    noted when the call ran, leave that on it in this process's clock (``taskstate.RAN``)."""
    got: Any = getattr(error, WORKER_RAN, None)
    if type(got) is not tuple or len(got) != 3:
        return
    worker, began, ended = got
    try:
        setattr(error, RAN, clock.span(str(worker), float(began), float(ended), received))
    except Exception:  # (an exception that takes no attributes: its times stay unknown)
        pass
