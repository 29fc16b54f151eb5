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
"""

from __future__ import annotations

import math


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
