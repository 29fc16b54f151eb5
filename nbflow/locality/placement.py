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
* **Copies count.**  Once a task is sent where it must fetch an input, that worker will
  hold a copy: later consumers of the same input count it as local there too.
* **Fan-in goes to the heaviest input.**  With several inputs on different workers, the
  worker that already holds most of the bytes moves the fewest.
* **Inputs of one consumer are made together** (the *join* term).  The rule also looks one
  step ahead, at the tasks that will take this task's result: when some of a consumer's
  other inputs are already placed, the consumer will run where it moves the fewest bytes,
  and a result made elsewhere has to move there.  So ``cost(w)`` adds, for the consumer
  where it matters most, the bytes that consumer would still fetch with this task on ``w``
  (its cheapest place, over the workers holding its placed inputs and ``w``)::

      join(w) = max over consumers c of  min over places u of
                sum(bytes of c's placed inputs, this one on w, not already on u) / bandwidth

  The join's bytes weigh 0.9 of an input's (``JOIN_WEIGHT``): they are a forecast, so
  where moving an input now and moving the result later cost the same, the task stays
  with its input (a chain's last link stays on its chain, the merge fetches it).
  Ten 1 MB producers feeding one merge are therefore made on one worker, until its queue
  costs more than moving 1 MB (then the next worker starts a second group), instead of
  being dealt out one per worker with the merge fetching three quarters of them.  A
  consumer with no other placed input adds nothing (its place is not known yet); nor
  does a result of unknown size.  The maximum, not the sum, over consumers: a result
  moved to a worker once is there for every consumer on it.
* **Fan-out spreads** once the producer's worker has a queue: small inputs are cheap to
  move, so the load term wins.
* **Resources.**  When workers advertise Dask resources and the task declares some, only
  workers that have them are candidates.  A task that declares ``memory`` (bytes) goes
  only to workers whose memory limit, less the bytes of this run's results they already
  hold, leaves room for it (the roomiest worker when none does).
* **Queues count from when the task could start.**  A task submitted before its inputs
  exist cannot start before they are made, so queued work that will be done by then does
  not delay it: the queue term is at most ``queue(w) - ready``, where ``ready`` is when
  its inputs are predicted to be made (each placed task's predicted end is its inputs'
  ``ready``, plus its own wait and duration; an input left to Dask has none and counts
  as ready now).  Without this, a consumer submitted at the start of a run saw, on the
  worker holding its 10 MB input, the whole queue of unrelated tasks that would be long
  finished by the time it could run, and went elsewhere, moving the 10 MB.
* **Predicted durations and sizes.**  When the store has seen the tasks before, the queue
  term adds up each queued task's own predicted duration instead of counting tasks times
  the mean (``backlog(w) * typical_task_seconds`` is the fallback), and an input whose
  producer has not finished yet counts with its predicted size on the worker its producer
  was sent to.  A task submitted ahead of its inputs does not count its own unfinished
  ancestors as queue: it waits for them wherever it runs.

The choice is a *hint*: the task is submitted with ``workers=[w]`` and
``allow_other_workers=True``, so Dask's work stealing may still move it when ``w`` turns out
to be slow.  :class:`RoundRobin` (a baseline for the benchmarks) ignores the data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

BANDWIDTH = 100e6  # bytes per second assumed between workers
PRIOR_SECONDS = 0.05  # a task's duration before any has finished
# A join's bytes are a forecast (the consumer may end up elsewhere), an input's are a fact:
# where the two trade the same bytes, the task stays with its input.
JOIN_WEIGHT = 0.9


Where = str | frozenset[str] | None  # a worker, the workers holding a copy, or unknown
# One consumer of the task being placed: (this task's bytes it takes, its other inputs
# already placed as (where, bytes)).
Join = tuple[int | None, Sequence[tuple[Where, int | None]]]


def _holds(where: Where, worker: str) -> bool:
    """Is an input that lives at ``where`` (a worker, or the workers with a copy) on ``worker``?"""
    return where == worker if where is None or isinstance(where, str) else worker in where


def join_bytes(worker: str, joins: Sequence[Join]) -> int:
    """Bytes the consumers in ``joins`` would still fetch if the task ran on ``worker``:
    for each consumer, at its cheapest place (a worker holding one of its placed inputs,
    or ``worker``); the largest over the consumers (see the module)."""
    worst = 0
    for own, others in joins:
        placed = [(w, b) for w, b in others if w is not None and b]
        if not own or not placed:  # no evidence where the consumer will run
            continue
        places = {worker}
        for w, _ in placed:
            places.update((w,) if isinstance(w, str) else w)
        need = min(sum(b for w, b in placed if not _holds(w, u)) + (own if u != worker else 0)
                   for u in places)
        worst = max(worst, need)
    return worst


class _Joins:
    """:func:`join_bytes` for one task and every candidate worker: each consumer's placed
    inputs, their places, and what the consumer would fetch at each place, found once.
    Only the candidate ``worker`` itself varies: a place it is not among fetches every
    placed input (the same sum for any such worker), and this task's own bytes are added
    at every place but ``worker``.  The sums are the ones :func:`join_bytes` adds, in its
    order, so the result is the same number."""

    __slots__ = ("_consumers",)

    def __init__(self, joins: Sequence[Join]) -> None:
        # per consumer: (own bytes, {place: bytes fetched there}, bytes fetched elsewhere)
        self._consumers: list[tuple[int, dict[str, int], int]] = []
        for own, others in joins:
            placed = [(w, b) for w, b in others if w is not None and b]
            if not own or not placed:  # no evidence where the consumer will run
                continue
            places: set[str] = set()
            for w, _ in placed:
                places.update((w,) if isinstance(w, str) else w)
            at = {u: sum(b for w, b in placed if not _holds(w, u)) for u in places}
            self._consumers.append((own, at, sum(b for _, b in placed)))

    def bytes_on(self, worker: str) -> int:
        """``join_bytes(worker, joins)``."""
        worst = 0
        for own, at, elsewhere in self._consumers:
            need = at.get(worker, elsewhere)  # (the consumer on ``worker`` itself)
            for u, fetched in at.items():
                if u != worker:
                    need = min(need, fetched + own)
            worst = max(worst, need)
        return worst


class Placer:
    """The locality rule (see the module).  Keeps the backlog and the durations it needs."""

    def __init__(self, bandwidth: float = BANDWIDTH, prior_seconds: float = PRIOR_SECONDS) -> None:
        if bandwidth <= 0:
            raise ValueError("bandwidth must be positive (bytes per second)")
        self.bandwidth = bandwidth
        self.prior_seconds = prior_seconds
        self.threads: dict[str, int] = {}
        self.resources: dict[str, dict[str, float]] = {}
        self.memory: dict[str, float] = {}  # worker -> memory limit in bytes (when known)
        self.held: dict[str, int] = {}  # worker -> bytes of results it holds for the run
        self.backlog: dict[str, int] = {}
        self.known: dict[str, list[float]] = {}  # worker -> [tasks with a prediction, their seconds]
        self._done_seconds = 0.0
        self._done = 0
        self.last_eta = 0.0  # the last task chosen: when it should end (time.monotonic())

    def set_workers(self, threads: dict[str, int], resources: dict[str, dict[str, float]] | None = None,
                    memory: dict[str, float] | None = None) -> None:
        self.threads = {w: max(1, int(n)) for w, n in threads.items()}
        self.resources = dict(resources or {})
        self.memory = {w: float(m) for w, m in (memory or {}).items() if m}
        for w in self.threads:
            self.backlog.setdefault(w, 0)

    @property
    def task_seconds(self) -> float:
        return self._done_seconds / self._done if self._done else self.prior_seconds

    def candidates(self, demand: dict[str, float]) -> list[str]:
        workers = sorted(self.threads)
        if demand and self.resources:
            fit = [w for w in workers
                   if all(self.resources.get(w, {}).get(r, 0.0) >= a for r, a in demand.items()
                          if r != "memory")]
            workers = fit or workers
        need = demand.get("memory") if demand else None
        if need and self.memory:
            room = {w: self.memory[w] - self.held.get(w, 0) for w in workers if w in self.memory}
            fit = [w for w in workers if room.get(w, 0.0) >= need]
            if not fit and room:  # nowhere has room: the roomiest worker
                fit = [max(sorted(room), key=lambda w: room[w])]
            workers = fit or workers
        return workers

    def queue_seconds(self, worker: str, exclude: Sequence[tuple[str | None, float | None]] = ()) -> float:
        """Seconds of queued work on ``worker`` per thread, leaving out ``exclude``
        (``(worker, predicted seconds)`` of tasks that must finish first anyway)."""
        return self._queue_seconds(worker, [sec for w, sec in exclude if w == worker],
                                   self.task_seconds)

    def _queue_seconds(self, worker: str, mine: Sequence[float | None], typical: float) -> float:
        """:meth:`queue_seconds` given the predicted seconds of ``worker``'s own excluded
        entries (in ``exclude``'s order: the same subtractions, so the same float)."""
        n = self.backlog.get(worker, 0)
        k = self.known.get(worker)
        known_n, known_s = (k[0], k[1]) if k else (0.0, 0.0)
        for sec in mine:
            n -= 1
            if sec is not None:
                known_n -= 1
                known_s -= sec
        work = max(0.0, n - known_n) * typical + max(0.0, known_s)
        return max(0.0, work) / self.threads.get(worker, 1)

    def wait(self, worker: str, exclude: Sequence[tuple[str | None, float | None]] = (),
             ready: float = 0.0) -> float:
        """Seconds a task would queue on ``worker`` beyond the moment its inputs are ready
        (``ready`` seconds from now): the queue without its own ``exclude``d ancestors, and
        at most the part of the whole queue that is still there when it could start."""
        queued = self.queue_seconds(worker, exclude)
        if ready > 0:
            queued = min(queued, max(0.0, self.queue_seconds(worker) - ready))
        return queued

    @staticmethod
    def ready_in(etas: Sequence[float | None]) -> float:
        """Seconds from now until inputs predicted to end at ``etas`` (``time.monotonic()``
        times; None: already made, or not known) are all made."""
        now = time.monotonic()
        return max([e - now for e in etas if e is not None] + [0.0])

    def cost(self, worker: str, inputs: Sequence[tuple[Where, int | None]],
             exclude: Sequence[tuple[str | None, float | None]] = (),
             joins: Sequence[Join] = (), ready: float = 0.0) -> float:
        moved: float = sum(b or 0 for w, b in inputs if not _holds(w, worker))
        if joins:
            moved += JOIN_WEIGHT * join_bytes(worker, joins)
        return moved / self.bandwidth + self.wait(worker, exclude, ready)

    def choose(self, inputs: Sequence[tuple[Where, int | None]],
               demand: dict[str, float] | None = None, seconds: float | None = None,
               exclude: Sequence[tuple[str | None, float | None]] = (),
               joins: Sequence[Join] = (), ready: float = 0.0) -> str | None:
        """The worker for a task with these inputs ``(worker, bytes)``; ``seconds`` is its
        predicted duration (None: unknown), ``exclude`` its unfinished ancestors, ``joins``
        its consumers' other placed inputs (see the module's join term), ``ready`` the
        seconds until its inputs are predicted to be made (see the module's queue term)."""
        workers = self.candidates(demand or {})
        if not workers:
            return None
        best, wait = self._best(workers, inputs, exclude, joins, ready)
        own = seconds if seconds is not None else self.task_seconds
        # (the wait its cost counted on that worker: what self.wait(best, ...) gives)
        self.last_eta = time.monotonic() + ready + wait + own
        self._queue(best, seconds)
        return best

    def _best(self, workers: Sequence[str], inputs: Sequence[tuple[Where, int | None]],
              exclude: Sequence[tuple[str | None, float | None]], joins: Sequence[Join],
              ready: float) -> tuple[str, float]:
        """The worker of least ``(cost, backlog, address)`` and the queue term its cost
        counted: the same floats as :meth:`cost` (each sum and each queue term in its
        order).  What does not depend on the worker (the typical task's seconds, the
        excluded ancestors grouped by worker, the join term's consumers: :class:`_Joins`)
        is worked out once per task, the rest in one loop with no call per worker: this
        runs for every task a Dask run submits, on the path from the call to its graph
        reaching the scheduler, where the calls between small per-worker functions were
        half of the rule's CPU."""
        typical = self.task_seconds
        mine: dict[str | None, list[float | None]] = {}
        for w, sec in exclude:
            mine.setdefault(w, []).append(sec)
        prepared = _Joins(joins) if joins else None
        bandwidth, backlog, known, threads = self.bandwidth, self.backlog, self.known, self.threads
        best_key: tuple[float, int, str] | None = None
        best_wait = 0.0
        for worker in workers:
            moved: float = 0
            for at, b in inputs:  # (_holds, inline)
                if b and not (at == worker if at is None or isinstance(at, str) else worker in at):
                    moved += b
            if prepared is not None:
                moved += JOIN_WEIGHT * prepared.bytes_on(worker)
            n = backlog.get(worker, 0)
            k = known.get(worker)
            known_n, known_s = (k[0], k[1]) if k else (0.0, 0.0)
            per = threads.get(worker, 1)
            # (_queue_seconds with nothing left out: the whole queue)
            whole = max(0.0, max(0.0, n - known_n) * typical + max(0.0, known_s)) / per
            own = mine.get(worker)
            if own:  # (_queue_seconds leaving out this task's own ancestors there)
                for sec in own:
                    n -= 1
                    if sec is not None:
                        known_n -= 1
                        known_s -= sec
                queued = max(0.0, max(0.0, n - known_n) * typical + max(0.0, known_s)) / per
            else:
                queued = whole
            if ready > 0:
                queued = min(queued, max(0.0, whole - ready))
            key = (moved / bandwidth + queued, backlog.get(worker, 0), worker)
            if best_key is None or key < best_key:
                best_key, best_wait = key, queued
        assert best_key is not None
        return best_key[2], best_wait

    def _queue(self, worker: str, seconds: float | None) -> None:
        self.backlog[worker] = self.backlog.get(worker, 0) + 1
        if seconds is not None:
            k = self.known.setdefault(worker, [0.0, 0.0])
            k[0] += 1
            k[1] += seconds

    def finished(self, worker: str | None, seconds: float, predicted: float | None = None,
                 nbytes: int | None = None, held_on: str | None = None) -> None:
        """A task queued on ``worker`` ended after ``seconds`` (``predicted``: what its
        queue entry counted); its result of ``nbytes`` is held on ``held_on``."""
        self.dropped(worker, predicted)
        self._done += 1
        self._done_seconds += seconds
        if held_on is not None and nbytes:
            self.held[held_on] = self.held.get(held_on, 0) + nbytes

    def dropped(self, worker: str | None, predicted: float | None = None) -> None:
        """A task queued on ``worker`` left the queue (finished, or was withdrawn)."""
        if worker is not None and self.backlog.get(worker, 0) > 0:
            self.backlog[worker] -= 1
            k = self.known.get(worker)
            if predicted is not None and k is not None and k[0] > 0:
                k[0] -= 1
                k[1] -= predicted


class RoundRobin(Placer):
    """Each task to the next worker in turn, wherever its inputs are (a baseline)."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def choose(self, inputs: Sequence[tuple[Where, int | None]],
               demand: dict[str, float] | None = None, seconds: float | None = None,
               exclude: Sequence[tuple[str | None, float | None]] = (),
               joins: Sequence[Join] = (), ready: float = 0.0) -> str | None:
        workers = sorted(self.threads)
        if not workers:
            return None
        w = workers[self._next % len(workers)]
        self._next += 1
        self._queue(w, seconds)
        return w
