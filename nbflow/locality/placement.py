"""Where to run a task on a Dask cluster: the placement rule and its cost model.

For a ready task with inputs ``(worker w_i, bytes b_i)`` the rule estimates, for every
worker ``w`` that can run it, how long the task would wait before it could start there::

    cost(w) = sum(b_i for inputs not already on w) / bandwidth      (moving the inputs)
            + backlog(w) / threads(w) * typical_task_seconds         (queueing behind work)

and sends the task to the worker with the lowest cost (ties: the smaller backlog, then the
worker's address, so the choice is deterministic).  ``backlog(w)`` counts the tasks this run
sent to ``w`` that have not finished; ``typical_task_seconds`` is the mean duration of the
run's finished Dask tasks (``prior_seconds`` until one finished); ``bandwidth`` defaults to
100 MB/s, a conservative figure for a LAN or a loaded local machine.

What follows from it:

* **Chains stay put.**  A task whose single input is large goes where that input is, unless
  that worker is so busy that waiting costs more than moving: ``b / bandwidth`` against the
  queue.  A chain of single-consumer tasks with big intermediates therefore runs on one
  worker and moves nothing.
* **Fan-in goes to the heaviest input.**  With several inputs on different workers, the
  worker that already holds most of the bytes moves the fewest.
* **Fan-out spreads** once the producer's worker has a queue: small inputs are cheap to
  move, so the load term wins.
* **Resources.**  When workers advertise Dask resources and the task declares some, only
  workers that have them are candidates.

The choice is a *hint*: the task is submitted with ``workers=[w]`` and
``allow_other_workers=True``, so Dask's work stealing may still move it when ``w`` turns out
to be slow.  :class:`RoundRobin` (a baseline for the benchmarks) ignores the data.
"""

from __future__ import annotations

from collections.abc import Sequence

BANDWIDTH = 100e6  # bytes per second assumed between workers
PRIOR_SECONDS = 0.05  # a task's duration before any has finished


class Placer:
    """The locality rule (see the module).  Keeps the backlog and the durations it needs."""

    def __init__(self, bandwidth: float = BANDWIDTH, prior_seconds: float = PRIOR_SECONDS) -> None:
        if bandwidth <= 0:
            raise ValueError("bandwidth must be positive (bytes per second)")
        self.bandwidth = bandwidth
        self.prior_seconds = prior_seconds
        self.threads: dict[str, int] = {}
        self.resources: dict[str, dict[str, float]] = {}
        self.backlog: dict[str, int] = {}
        self._done_seconds = 0.0
        self._done = 0

    def set_workers(self, threads: dict[str, int], resources: dict[str, dict[str, float]] | None = None,
                    ) -> None:
        self.threads = {w: max(1, int(n)) for w, n in threads.items()}
        self.resources = dict(resources or {})
        for w in self.threads:
            self.backlog.setdefault(w, 0)

    @property
    def task_seconds(self) -> float:
        return self._done_seconds / self._done if self._done else self.prior_seconds

    def candidates(self, demand: dict[str, float]) -> list[str]:
        workers = sorted(self.threads)
        if demand and self.resources:
            fit = [w for w in workers
                   if all(self.resources.get(w, {}).get(r, 0.0) >= a for r, a in demand.items())]
            return fit or workers
        return workers

    def cost(self, worker: str, inputs: Sequence[tuple[str | None, int | None]]) -> float:
        moved = sum(b or 0 for w, b in inputs if w != worker)
        queue = self.backlog.get(worker, 0) / self.threads.get(worker, 1)
        return moved / self.bandwidth + queue * self.task_seconds

    def choose(self, inputs: Sequence[tuple[str | None, int | None]],
               demand: dict[str, float] | None = None) -> str | None:
        workers = self.candidates(demand or {})
        if not workers:
            return None
        best = min(workers, key=lambda w: (self.cost(w, inputs), self.backlog.get(w, 0), w))
        self.backlog[best] = self.backlog.get(best, 0) + 1
        return best

    def finished(self, worker: str | None, seconds: float) -> None:
        if worker is not None and self.backlog.get(worker, 0) > 0:
            self.backlog[worker] -= 1
        self._done += 1
        self._done_seconds += seconds


class RoundRobin(Placer):
    """Each task to the next worker in turn, wherever its inputs are (a baseline)."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def choose(self, inputs: Sequence[tuple[str | None, int | None]],
               demand: dict[str, float] | None = None) -> str | None:
        workers = sorted(self.threads)
        if not workers:
            return None
        w = workers[self._next % len(workers)]
        self._next += 1
        self.backlog[w] = self.backlog.get(w, 0) + 1
        return w
