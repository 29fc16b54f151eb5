"""The scheduler plugin of :mod:`nbflow.engine.backends.dask_recovery`, on its own.

It subclasses distributed's ``SchedulerPlugin``, so importing it imports distributed; it is
imported when a Dask run registers it, not when nbflow is imported.  (It keeps its own
module, importable by name, because the scheduler unpickles it by that name.)

**Completions, one event per turn.**  The client needs, for every task of nbflow's, the
worker that holds its result, the result's size and the call's seconds (and, for a task
sent without a future the client holds, the fact that it ended at all).  The scheduler
knows all of it when a worker's ``task-finished`` message moves the task to ``memory``
(the message carries the worker, Dask's own ``sizeof`` of the value and the compute
start and stop).  So the plugin collects those facts in :meth:`LooseRestrictions.transition`
and sends every completion of one turn of the scheduler's event loop as ONE event on
nbflow's topic, ``{"done": [[key, worker, nbytes, seconds, metrics, start, stop], ...]}``
(``start``/``stop``: when the call ran, in the scheduler's clock), instead of each
worker announcing each task on its own (a message worker -> scheduler, and one
scheduler -> client, per task).  The hook runs for every transition of every key on
the scheduler, so it returns after one string comparison for anything that is not a
move to ``memory``, and filters nbflow's keys by their shape (``<task>-<run tag>-<n>``,
the tag eight characters) only then.

Completions rarely share a turn (each worker's ``task-finished`` is a turn of its own), so
the plugin holds them for a short ``window`` (seconds, set by the client that registers
it: ``NBFLOW_DASK_COMPLETIONS_WINDOW``, default 0.1; 0: one turn) and sends what gathered
meanwhile in one event; a completion some client holds a future for is sent at once, with
every one waiting before it (the client is told of that key now anyway, and its run needs
the completions before it to take it), and so is what waits when such a task starts on a
worker (its run takes them while it runs, not after it ended).  A held task's completion
is sent from within its transition, before the scheduler reports the key to its client
(in the same batch of the scheduler's stream to the client, then).  Sent at the end of the
turn, it came after that report, and the stream sends a batch no sooner than 2 ms after
the previous one: when the scheduler's loop was late (its thread sharing this process's
GIL with the run's), the report went alone and the completion waited those 2 ms, in a
third of the runs of ``benchmarks/locality.py``'s *fan* (``benchmarks/RESULTS.md``,
session 13 (B)).  So what waits is only the
completions of tasks nobody holds: intermediates whose every consumer is already on the
cluster (see ``DaskBackend._unheld``), which the run does not need in order to go on.  On a
``LocalCluster`` the scheduler shares a process (and its GIL) with the client: each event
made the client's loop and the run's thread work while the next task of a chain waited
for the scheduler; the window puts that work between the links, in one piece
(``benchmarks/RESULTS.md``, session 9 (A)).

**Where a run's tasks went.**  The end-of-run read asks the workers for their transfer-log
entries of the run's keys and their memory evidence (:mod:`nbflow.locality.agent`).  A
worker fetches a key only for a task sent to it, so the plugin also notes, per run tag, every
worker a task of nbflow's was sent to (its move to ``processing``); a task Dask's work
stealing moves is sent to the thief without a transition, and is read from the scheduler's
own ``stealing`` events.  :func:`workers_sent` puts the two together for a read on a
scheduler in this process, which then asks those workers only (on a *fan* run that keeps
everything on one worker: one of four).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .dask_recovery import METRICS, NAME, UNWANTED_TOPIC

_UNRUN = frozenset({"waiting", "queued", "no-worker", "processing"})  # states before a result
SENT_RUNS = 4096  # run tags whose workers the plugin keeps (the oldest go first; see the module)


def _span(startstops: Any) -> tuple[float, float] | None:
    """When the call ran on its worker: the compute start and stop of a ``task-finished``
    message's records (in the scheduler's clock: each worker adds its estimate of the
    scheduler's offset before sending them)."""
    for ss in startstops or ():
        if ss.get("action") == "compute":
            return float(ss["start"]), float(ss["stop"])
    return None


class LooseRestrictions(SchedulerPlugin):
    """On the scheduler: a worker that leaves is struck from the hints of the tasks that
    only hinted at it, so they wait for (and run on) any worker (see
    :mod:`.dask_recovery`), and so is every worker that cannot run it (gone, or paused)
    when a task hinting at it waits for a worker (:meth:`_strike_unable`); the completions
    of nbflow's tasks go to the clients, one event per turn of the scheduler's loop (see
    the module)."""

    name = NAME
    # What this version does beyond loosening restrictions (the client asks, see
    # dask_recovery.ensure: a scheduler with an older nbflow reports no completions).
    # 1: completions; 2: and this nbflow's workers (the same installation as a rule) can
    # put a small result itself in the facts relayed (DaskBackend._carry_limit).
    REPORTS_COMPLETIONS = 2
    # A held task's completion is sent within its transition (False: at the end of the turn,
    # as before session 13; benchmarks/end_read.session_13_b_off, on a scheduler in its
    # process)
    held_now = True

    def __init__(self, window: float = 0.0) -> None:
        self.scheduler: Any = None
        self.reports = True  # send completions (switched off by a benchmark's variant)
        self.window = window  # seconds completions may wait to be sent together (see the module)
        self._timer: Any = None
        self._done: list[list[Any]] = []  # this turn's completions, not yet sent
        self._loop: asyncio.AbstractEventLoop | None = None
        self.events = 0  # completion events sent (one per turn with completions)
        self.completions = 0  # completions sent
        self.sent_to: dict[str, set[str]] = {}  # run tag -> workers its tasks were sent to
        self.since = time.time()  # (wall clock) sent_to holds every run's tasks sent from here

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self._loop = asyncio.get_running_loop()
        self.since = time.time()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """A completion of nbflow's is collected for this turn's event (see the module).

        A task no client wants that failed on its own account (not because an input did),
        or was dropped before it made a result, is noted on nbflow's topic too: nbflow
        sends some intermediates without holding their futures (``DaskBackend._unheld``),
        and a failure, a worker dying under the task too often, or a drop makes no
        completion; without the note the run would wait for one."""
        if finish == "memory":
            if self.reports and type(key) is str:
                parts = key.rsplit("-", 2)
                if len(parts) == 3 and len(parts[1]) == 8:  # "<task>-<run tag>-<attempt>"
                    self._completed(key, kwargs)
                    ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
                    if ts is not None and ts.who_wants:  # held: sent now (see the module)
                        if self.held_now:
                            self._send_now()
                        elif self.window > 0 and self._timer is not None:  # (as before)
                            self._send_soon()
        elif finish == "processing":
            ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
            if ts is not None and type(key) is str:
                self._sent(key, ts)
            if self._timer is not None and ts is not None and ts.who_wants:
                # a task some client holds starts: its run will need what waits (the
                # completions before it) once it ends; sent now, the client takes them while
                # the task runs
                self._send_soon()
        elif finish == "erred" and self.scheduler is not None:
            ts = self.scheduler.tasks.get(key)
            if ts is not None and not ts.who_wants and ts.exception_blame is ts:
                self.scheduler.log_event(UNWANTED_TOPIC, {"key": key, "erred": True})
        elif finish == "no-worker" and self.scheduler is not None:
            # no worker runs (nor would one that joins or resumes: see _strike_unable)
            ts = self.scheduler.tasks.get(key)
            if ts is not None and ts.loose_restrictions and ts.worker_restrictions:
                self._strike_unable(ts)
        elif finish == "released" and start in _UNRUN and self.scheduler is not None:
            # released before it made a result: when the scheduler does not take it up
            # again in the same round of transitions (as after a worker died under it),
            # it was dropped because every task taking it failed for another input's sake
            ts = self.scheduler.tasks.get(key)
            if ts is not None and not ts.who_wants and isinstance(key, str):
                try:
                    asyncio.get_running_loop().call_soon(self._dropped, key)
                except RuntimeError:  # (no loop running here: judge it now)
                    self._dropped(key)

    def _sent(self, key: str, ts: Any) -> None:
        """Note the worker a task of nbflow's was sent to, under its run's tag (see the module)."""
        parts = key.rsplit("-", 2)
        ws = getattr(ts, "processing_on", None)
        if len(parts) != 3 or len(parts[1]) != 8 or ws is None:
            return
        sent = self.sent_to.get(parts[1])
        if sent is None:
            sent = self.sent_to[parts[1]] = set()
            if len(self.sent_to) > SENT_RUNS:  # (runs never read: a scheduler elsewhere)
                del self.sent_to[next(iter(self.sent_to))]
        sent.add(ws.address)

    def _completed(self, key: str, facts: dict[str, Any]) -> None:
        worker = facts.get("worker")
        nbytes = facts.get("nbytes")
        if worker is None or nbytes is None:  # (not from a task-finished message: ask the state)
            ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
            if ts is None or not ts.who_has:
                return  # (the client asks the scheduler when nothing is said)
            worker = worker or min(ws.address for ws in ts.who_has)
            nbytes = ts.nbytes if nbytes is None else nbytes
        first = not self._done
        metrics = (facts.get("metadata") or {}).get(METRICS)  # (the task's CPU and peak RSS)
        span = _span(facts.get("startstops"))
        if span is None:
            self._done.append([key, worker, int(nbytes), None, metrics])
        else:  # (the seconds stay in their place: a client of session 9 reads five fields)
            self._done.append([key, worker, int(nbytes), span[1] - span[0], metrics, *span])
        if first:  # the first completion: send them all once this turn (or window) is over
            try:
                loop = self._loop or asyncio.get_running_loop()
            except RuntimeError:  # (no loop running here: send it now)
                self._send()
                return
            if self.window > 0:
                self._timer = loop.call_later(self.window, self._send)
            else:
                loop.call_soon(self._send)

    def _send_now(self) -> None:
        """Send what waits now, from within the transition: before the scheduler's own
        report of this key to its client (see the module)."""
        if self._timer is not None:
            self._timer.cancel()
        self._send()

    def _send_soon(self) -> None:
        """Send what waits at the end of this turn, not when the window closes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        (self._loop or asyncio.get_running_loop()).call_soon(self._send)

    def _send(self) -> None:
        self._timer = None
        done, self._done = self._done, []
        if done and self.scheduler is not None:
            self.events += 1
            self.completions += len(done)
            self.scheduler.log_event(UNWANTED_TOPIC, {"done": done})

    def _dropped(self, key: str) -> None:
        ts = self.scheduler.tasks.get(key)
        if ts is None or (ts.state in ("released", "forgotten") and not ts.who_wants):
            self.scheduler.log_event(UNWANTED_TOPIC, {"key": key, "dropped": True})

    def _strike_unable(self, ts: Any) -> None:
        """Strike the workers that cannot run a task from its loose hint as it starts
        waiting for a worker: those that have left, and those connected but not running
        (paused under memory pressure, or retiring).

        Dask sends a loosely hinted task to any running worker when none it names runs
        (``decide_worker`` falls back for ``loose_restrictions``), so such a task waits in
        ``no-worker`` only while no worker runs at all.  But when a worker then joins or
        resumes, Dask wakes a waiting task only if that worker is one its restrictions
        allow (``Scheduler.bulk_schedule_unrunnable_after_adding_worker``, called by
        ``add_worker`` and ``handle_worker_status_change``, asks ``valid_workers``, which
        keeps the named workers that run, and does not look at ``loose_restrictions``).
        A task whose hint names only a worker that left (nbflow placed it where a result
        was; the worker died before the task reached the scheduler, so
        :meth:`remove_worker` did not see it) or one that is paused would wait for that
        worker: forever, for one that left; for as long as the pause lasts, however many
        other workers join or resume meanwhile, for a paused one.  A task enters
        ``no-worker`` by one transition only (from ``waiting``), which :meth:`transition`
        sees, so striking there covers every way such a worker got into the hint.  With
        nothing struck that could run it, nothing changes where it runs: Dask would not
        have chosen a worker that is not running, and it still prefers the running
        workers that hold the task's inputs.  A strict hint (no ``allow_other_workers``)
        is the user's, kept."""
        hint = ts.worker_restrictions
        workers, running = self.scheduler.workers, self.scheduler.running
        unable = {addr for addr in hint if workers.get(addr) not in running}
        if unable:
            hint -= unable
            if not hint:  # no restriction left: the next worker to run takes it
                ts.worker_restrictions = None
                ts.loose_restrictions = False

    def remove_worker(self, scheduler: Any = None, worker: str = "", **kwargs: Any) -> None:
        woken = []
        for ts in scheduler.tasks.values():
            hint = ts.worker_restrictions
            if hint and worker in hint and ts.loose_restrictions:
                hint.discard(worker)
                if not hint:  # no restriction left: any running worker will do
                    ts.worker_restrictions = None
                    ts.loose_restrictions = False
                    if ts in scheduler.unrunnable:
                        woken.append(ts.key)
        if woken and scheduler.running:  # (none running: the next one to run takes them)
            scheduler.transitions({k: "processing" for k in woken},
                                  stimulus_id=f"nbflow-loose-restrictions-{time.time()}")


def workers_sent(dask_scheduler: Any, keys: Iterable[str], since: float) -> set[str] | None:
    """On the scheduler (in its own thread): every worker a task of the run of ``keys`` (Dask
    keys of one nbflow run, started at ``since``, wall clock) was sent to, by the scheduler or
    by Dask's work stealing; None when that cannot be told for sure (no plugin of this kind,
    one registered after the run started, keys without a run tag, or stealing events of the
    run's time no longer kept): then ask every worker.  Only workers still connected are
    named (one that left took its logs with it, as for a broadcast to every worker).  Read
    once, as the run is read: its entry is dropped."""
    plugin = dask_scheduler.plugins.get(NAME)
    sent_to = getattr(plugin, "sent_to", None)
    if sent_to is None or getattr(plugin, "since", math.inf) > since:
        return None
    tags = set()
    for key in keys:
        parts = key.rsplit("-", 2) if type(key) is str else ()
        if len(parts) != 3 or len(parts[1]) != 8:
            return None
        tags.add(parts[1])
    out: set[str] = set()
    for tag in tags:
        out |= sent_to.pop(tag, set())
    stolen = _thieves(dask_scheduler, set(keys), since)
    if stolen is None:
        return None
    return {w for w in out | stolen if w in dask_scheduler.workers}


def _thieves(dask_scheduler: Any, keys: set[str], since: float) -> set[str] | None:
    """The workers Dask's work stealing moved one of ``keys`` to since ``since`` (its
    ``confirm`` events: ``("confirm", key, state, victim, thief, stimulus_id)``); None if
    the scheduler no longer keeps every stealing event since then."""
    events = dask_scheduler.get_events("stealing")
    if not events:
        return set()
    maxlen = getattr(getattr(dask_scheduler, "_broker", None), "_topics", {}).get("stealing")
    maxlen = getattr(getattr(maxlen, "events", None), "maxlen", None)
    if maxlen is None:  # (a broker of another shape: the length Dask's config gives it)
        import dask

        maxlen = dask.config.get("distributed.admin.low-level-log-length", None)
    if maxlen is not None and len(events) >= maxlen and events[0][0] >= since:
        return None  # (the oldest were dropped: a steal of the run's may be among them)
    out = set()
    for when, msg in reversed(events):
        if when < since:
            break
        if (type(msg) is tuple and len(msg) >= 5 and msg[0] == "confirm" and msg[1] in keys
                and isinstance(msg[4], str)):
            out.add(msg[4])
    return out


def reports_completions(dask_scheduler: Any) -> int:
    """On the scheduler: what the registered plugin reports (0: no plugin, or one of an
    nbflow that sends no completions).  Asked by :func:`.dask_recovery.ensure`."""
    plugin = dask_scheduler.plugins.get(NAME)
    return int(getattr(type(plugin), "REPORTS_COMPLETIONS", 0)) if plugin is not None else 0


def set_reporting(dask_scheduler: Any, on: bool, window: float | None = None) -> bool | tuple[bool, float]:
    """On the scheduler: switch the completion events on or off (a benchmark's variant that
    restores the workers' announcements); returns the previous setting.  With ``window``,
    also set the window (see the module) and return ``(reports, window)`` as they were."""
    plugin = dask_scheduler.plugins.get(NAME)
    if plugin is None:
        return False if window is None else (False, 0.0)
    was = bool(getattr(plugin, "reports", False))
    plugin.reports = bool(on)
    if window is None:
        return was
    old = float(getattr(plugin, "window", 0.0))
    plugin.window = float(window)
    return was, old
